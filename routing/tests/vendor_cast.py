"""Helpers the per-vendor live tests share: a cast on any kind, SSE parsing, exact-billing cancellation."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from billing.services import api_key_create
from conftest import Cast
from fakevendors.server import FakeServer
from lib import tokens
from routing.services import model_create, vendor_create
from routing.tests.sse_client import RawStream

CLOSE_BOUND = 0.100  # seconds from the client's close to the vendor seeing its socket close
MESSAGES = [{"role": "user", "content": "Tell me a long story about a cat."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def vendor_cast(
    router_url: str,
    base_url: str,
    kind: str,
    *,
    credentials: dict[str, Any],
    options: dict[str, Any] | None = None,
    upstream: str = "fake-model",
) -> Cast:
    """A vendor of ``kind`` at ``base_url``, model ``test/fake`` on it, and a key, on the live router."""
    vendor = vendor_create("fake", kind, base_url, options or {}, credentials)
    model_create(
        "test/fake", deployments=[(vendor, upstream, 0, 1)], input_price=Decimal("1"), output_price=Decimal("2")
    )
    api_key, plaintext = api_key_create("tester")
    return Cast(router_url, plaintext, api_key, "test/fake")


def sse_chunks(text: str) -> list[dict[str, Any]]:
    """The JSON chunks of an SSE body, checking that it ends with ``[DONE]``."""
    payloads = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]", payloads[-3:]
    return [orjson.loads(p) for p in payloads[:-1]]


def tool_calls_of(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tool-call fragments of the chunks' deltas, in order."""
    return [call for c in chunks for choice in c["choices"] for call in (choice["delta"].get("tool_calls") or [])]


def delta_text(chunks: list[dict[str, Any]], field: str = "content") -> str:
    return "".join((c.get("delta") or {}).get(field) or "" for chunk in chunks for c in chunk.get("choices") or [])


def tool_round_trip(cast: Cast, stream: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ask with a tool, send the tool's answer back; return (the assistant's tool call, final messages sent)."""
    first = cast.chat(messages=MESSAGES, tools=[WEATHER_TOOL], stream=stream)
    assert first.status_code == 200, first.text
    if stream:
        chunks = sse_chunks(first.text)
        fragments = [
            c for chunk in chunks for ch in chunk["choices"] for c in (ch.get("delta") or {}).get("tool_calls") or []
        ]
        call = {
            "id": fragments[0]["id"],
            "type": "function",
            "function": {"name": fragments[0]["function"]["name"], "arguments": "".join(f["function"].get("arguments", "") for f in fragments)},
        }  # fmt: skip
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    else:
        choice = first.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert call["id"] and call["function"]["arguments"]
    messages: list[dict[str, Any]] = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 21}'},
    ]
    second = cast.chat(messages=messages, tools=[WEATHER_TOOL], stream=stream)
    assert second.status_code == 200, second.text
    if stream:
        chunks = sse_chunks(second.text)
        assert delta_text(chunks).strip()
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    else:
        assert second.json()["choices"][0]["message"]["content"].strip()
    return call, messages


def cancel_and_measure(cast: Cast, fake: FakeServer, stop_after: int, field: str = "content") -> tuple[str, str]:
    """Stream, close the client after ``stop_after`` words of ``field``; return (generation id, text received).

    Asserts the vendor saw its socket close within ``CLOSE_BOUND`` of the client's close.
    """
    stream = RawStream(cast.url, cast.key, {"model": cast.model, "messages": MESSAGES, "stream": True})
    received = ""
    while received.count(" ") < stop_after:
        chunk = stream.next_data()
        assert isinstance(chunk, dict), chunk
        received += delta_text([chunk], field)
    closed = stream.close()
    request = fake.last()
    seen = fake.wait_closed(request)
    assert seen is not None, "the vendor never saw the client's close"
    assert seen - closed < CLOSE_BOUND, f"vendor saw the close {seen - closed:.3f}s after the client"
    return stream.headers["x-generation-id"], received


def counted(text: str) -> int:
    return tokens.count_text(text, "cl100k_base")
