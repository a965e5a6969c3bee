"""``POST /v1/messages`` in process: Anthropic's event sequence, tool calls, errors, billing.

The relay and the ledger are the real ones; vendors are scripted (canonical events), so each
test says exactly what the vendor streamed and checks what an Anthropic client received.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from billing.models import UsageRecord
from billing.services import api_key_create
from lib import tokens
from routing.relay.limits import cut_threshold
from routing.tests.inprocess import (
    Exchange,
    InProcessRelay,
    Script,
    ScriptedAdapter,
    answer,
    answer_text,
    cost,
    failure,
    role_batch,
)
from routing.vendors.base import ChunkEvent, Completion, UpstreamCall, Usage, UsageEvent

USER = [{"role": "user", "content": "Tell me a story."}]


def send(
    relay: InProcessRelay,
    body: dict[str, Any] | bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    **options: Any,
) -> Exchange:
    """POST a Messages request with the key in ``x-api-key``, as Anthropic's SDKs send it."""
    if headers is None:
        headers = [(b"x-api-key", relay.key.encode()), (b"anthropic-version", b"2023-06-01")]
    payload = (
        body if isinstance(body, bytes) else orjson.dumps({"model": "m", "max_tokens": 100, "messages": USER, **body})
    )
    options.setdefault("path", "/v1/messages")
    exchange = Exchange(payload, headers, **options)
    relay.loop.run_until_complete(exchange.run())
    return exchange


def events(exchange: Exchange) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events received: (event name, parsed data)."""
    out = []
    for frame in exchange.raw.split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in frame.split(b"\n") if line and not line.startswith(b":"))
        if lines:
            out.append((lines[b"event"].decode(), orjson.loads(lines[b"data"])))
    return out


def chunk(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
    return [ChunkEvent([{"index": 0, "delta": delta, "finish_reason": finish}])]


def test_whole_message_carries_the_generation_id_content_stop_reason_and_usage(relay):
    relay.deploy("m", Script("v", answer(5, usage=Usage(11, 5))))
    seen = send(relay, {})
    assert seen.status == 200
    body = seen.json()
    assert body["id"] == seen.generation_id
    assert (body["type"], body["role"], body["model"]) == ("message", "assistant", "m")
    assert body["content"] == [{"type": "text", "text": answer_text(5)}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("end_turn", None)
    assert body["usage"] == {
        "input_tokens": 11, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
    }  # fmt: skip
    record = relay.record(seen.generation_id)
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", 11, 5)
    assert record.cost == cost(11, 5)


def test_stream_is_anthropics_event_sequence(relay):
    relay.deploy("m", Script("v", answer(4, usage=Usage(9, 4))))
    seen = send(relay, {"stream": True})
    assert seen.headers["content-type"].startswith("text/event-stream")
    received = events(seen)
    assert [name for name, _ in received] == [
        "message_start", "content_block_start", *["content_block_delta"] * 4, "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert all(data["type"] == name for name, data in received)
    start = received[0][1]["message"]
    assert (start["id"], start["model"], start["content"]) == (seen.generation_id, "m", [])
    assert received[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert "".join(data["delta"]["text"] for name, data in received if name == "content_block_delta") == answer_text(4)
    delta = received[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert (delta["usage"]["input_tokens"], delta["usage"]["output_tokens"]) == (9, 4)
    record = relay.record(seen.generation_id)
    assert (record.status, record.streamed, record.completion_tokens) == ("completed", True, 4)


def test_thinking_then_tool_call_stream_as_separate_blocks(relay):
    batches = [
        role_batch(),
        chunk({"reasoning_content": "Weather needs "}),
        chunk({"reasoning_content": "a lookup."}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"),
    ]
    relay.deploy("m", Script("v", batches))
    received = events(send(relay, {"stream": True}))
    blocks = [(data["index"], data["content_block"]) for name, data in received if name == "content_block_start"]
    assert blocks == [
        (0, {"type": "thinking", "thinking": "", "signature": ""}),
        (1, {"type": "tool_use", "id": "call_1", "name": "weather", "input": {}}),
    ]
    deltas = [(data["index"], data["delta"]) for name, data in received if name == "content_block_delta"]
    assert [d for i, d in deltas if i == 0] == [
        {"type": "thinking_delta", "thinking": "Weather needs "}, {"type": "thinking_delta", "thinking": "a lookup."},
    ]  # fmt: skip
    assert "".join(d["partial_json"] for i, d in deltas if i == 1) == '{"city": "Paris"}'
    stops = [data["index"] for name, data in received if name == "content_block_stop"]
    assert stops == [0, 1]
    assert received[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_tool_use_round_trip_reaches_the_vendor_in_the_canonical_vocabulary(relay):
    script = Script("v", answer(2))
    relay.deploy("m", script)
    body = {
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            ]},
        ],
        "tools": [{"name": "weather", "description": "Look it up.", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-7"},
        "temperature": 0.5,
    }  # fmt: skip
    seen = send(relay, body)
    assert seen.status == 200, seen.raw
    request = script.calls[0].request
    assert request.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
    ]  # fmt: skip
    assert request.params == {
        "max_tokens": 100, "temperature": 0.5, "stop": ["END"], "user": "u-7", "parallel_tool_calls": False,
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}, "description": "Look it up."}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
    }  # fmt: skip


def test_whole_message_tool_call_becomes_a_tool_use_block(relay, monkeypatch):
    relay.deploy("m", Script("v"))

    # A scripted whole answer is text only: this vendor answers with a tool call.
    async def complete(self: ScriptedAdapter, call: UpstreamCall) -> Completion:
        tool_call = {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
        message = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
        return Completion([{"index": 0, "message": message, "finish_reason": "tool_calls"}], Usage(3, 2))

    monkeypatch.setattr(ScriptedAdapter, "complete", complete)
    body = send(relay, {}).json()
    assert body["content"] == [{"type": "tool_use", "id": "call_9", "name": "f", "input": {"x": 1}}]
    assert body["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "expected"), [("length", "max_tokens"), ("content_filter", "refusal"), ("stop", "end_turn")]
)
def test_stop_reason_is_mapped_from_the_finish_reason(relay, finish, expected):
    """Told to the client in Anthropic's words; kept on the usage record in the canonical ones,
    streamed too (where Messages renders the finish only at the end)."""
    relay.deploy("m", Script("v", answer(2, finish=finish)))
    answered = send(relay, {})
    assert answered.json()["stop_reason"] == expected
    streamed = send(relay, {"stream": True})
    assert events(streamed)[-2][1]["delta"]["stop_reason"] == expected
    for seen in (answered, streamed):
        assert relay.record(seen.generation_id).finish_reason == finish


def test_authorization_bearer_is_accepted_too(relay):
    relay.deploy("m", Script("v", answer(2)))
    seen = send(relay, {}, headers=[(b"authorization", f"Bearer {relay.key}".encode())])
    assert seen.status == 200


@pytest.mark.parametrize(
    ("body", "headers", "status", "kind", "words"),
    [
        ({}, [], 401, "authentication_error", ""),
        ({"model": "nope"}, None, 404, "not_found_error", "nope"),
        ({"top_k": -1}, None, 400, "invalid_request_error", "top_k"),
        ({"n": 2}, None, 400, "invalid_request_error", "n: Extra inputs are not permitted"),
        ({"max_tokens": None}, None, 400, "invalid_request_error", "max_tokens"),
        ({"messages": [{"role": "user", "content": [{"type": "search_result", "source": "s"}]}]}, None, 400,
         "invalid_request_error", "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, None, 400,
         "invalid_request_error", "messages[0].content[0].source"),
    ],
)  # fmt: skip
def test_errors_before_the_stream_are_anthropic_shaped(relay, body, headers, status, kind, words):
    relay.deploy("m", Script("v", answer(2)))
    seen = send(relay, body, headers=headers)
    assert seen.status == status
    payload = seen.json()
    assert set(payload) == {"type", "error"} and payload["type"] == "error"
    assert payload["error"]["type"] == kind
    assert words in payload["error"]["message"]


def test_vendor_failure_after_the_stream_began_is_an_error_event(relay):
    relay.deploy("m", Script("v", answer(3, finish="stop")[:-1], error=failure(500)))
    received = events(send(relay, {"stream": True}))
    assert [name for name, _ in received][:2] == ["message_start", "content_block_start"]
    name, data = received[-1]
    assert name == "error"
    assert data["type"] == "error" and data["error"]["type"] == "api_error"
    assert "message_stop" not in [name for name, _ in received]


def test_cancelled_stream_is_billed_for_what_was_delivered(relay):
    script = Script("talker", answer(50, usage=Usage(11, 50)), delay=0.01)
    relay.deploy("m", script)
    seen = send(relay, {"stream": True}, disconnect_after=7)
    delivered = "".join(d["delta"]["text"] for n, d in events(seen) if n == "content_block_delta")
    assert delivered == answer_text(7)
    assert script.closed == 1 and script.yielded < 12
    record = relay.record(seen.generation_id)
    assert (record.status, record.error_code) == ("cancelled", "client_disconnected")
    assert (record.completion_tokens, record.tokens_delivered) == (7, 7)


def test_keepalive_is_anthropics_ping_event(relay, settings):
    settings.SIRAYA_KEEPALIVE_SECONDS = 0.05
    relay.deploy("m", Script("v", answer(2), first_delay=0.3))
    received = events(send(relay, {"stream": True}))
    assert received[0] == ("ping", {"type": "ping"})
    assert next(name for name, _ in received if name != "ping") == "message_start"


def test_usage_in_the_stream_sends_cached_tokens_apart(relay):
    batches = [
        *answer(3)[:-1],
        [ChunkEvent([{"index": 0, "delta": {}, "finish_reason": "stop"}]), UsageEvent(Usage(20, 3, cached_tokens=8))],
    ]
    relay.deploy("m", Script("v", batches))
    usage = events(send(relay, {"stream": True}))[-2][1]["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"], usage["output_tokens"]) == (12, 8, 3)


def test_credit_exhaustion_keeps_402_as_a_billing_error(relay):
    script = Script("v", answer(2))
    relay.deploy("m", script)
    _, plaintext = api_key_create("poor", credit_limit=Decimal("0.000001"))
    seen = send(relay, {}, headers=[(b"x-api-key", plaintext.encode())])
    assert seen.status == 402
    error = seen.json()["error"]
    assert error["type"] == "billing_error" and "credit" in error["message"].lower()
    assert script.calls == []
    assert relay.record(seen.generation_id).http_status == 402


def test_rate_limit_is_a_rate_limit_error(relay):
    relay.deploy("m", Script("v", answer(2)))
    _, plaintext = api_key_create("hasty", requests_per_minute=1)
    headers = [(b"x-api-key", plaintext.encode())]
    assert send(relay, {}, headers=headers).status == 200
    seen = send(relay, {}, headers=headers)
    assert (seen.status, seen.json()["error"]["type"]) == (429, "rate_limit_error")
    assert "retry-after" in seen.headers


def test_count_tokens_answers_the_routers_count_for_the_model(relay):
    relay.deploy("m", Script("v", answer(2)))
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    body = {"model": "m", "system": "Be brief.", "messages": USER, "tools": tools}
    seen = send(relay, orjson.dumps(body), path="/v1/messages/count_tokens")
    assert seen.status == 200
    canonical = [{"role": "system", "content": "Be brief."}, *USER]
    tool = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert seen.json() == {"input_tokens": tokens.count_messages(canonical, "cl100k_base", tool)}
    assert not UsageRecord.objects.exists()  # counting is free


@pytest.mark.parametrize(
    ("body", "headers", "status", "kind"),
    [
        ({"model": "m", "messages": USER}, [], 401, "authentication_error"),
        ({"model": "nope", "messages": USER}, None, 404, "not_found_error"),
        ({"model": "m", "messages": USER, "max_tokens": 5}, None, 400, "invalid_request_error"),
    ],
)
def test_count_tokens_errors_are_anthropic_shaped(relay, body, headers, status, kind):
    relay.deploy("m", Script("v", answer(2)))
    seen = send(relay, orjson.dumps(body), headers=headers, path="/v1/messages/count_tokens")
    assert (seen.status, seen.json()["type"], seen.json()["error"]["type"]) == (status, "error", kind)


def test_oversized_body_is_request_too_large(relay, settings):
    settings.SIRAYA_MAX_BODY_BYTES = 100
    relay.deploy("m", Script("v", answer(2)))
    seen = send(relay, {"system": "x" * 200})
    assert (seen.status, seen.json()["error"]["type"]) == (413, "request_too_large")


def test_other_methods_get_405_in_anthropics_shape(relay):
    seen = send(relay, b"", method="GET")
    assert seen.status == 405 and seen.headers["allow"] == "POST"
    payload = seen.json()
    assert (payload["type"], payload["error"]["type"]) == ("error", "invalid_request_error")
    assert "Use POST for /v1/messages" in payload["error"]["message"]


def test_fallback_before_the_first_token_starts_the_message_once(relay):
    relay.deploy("m", Script("broken", [role_batch()], error=failure(500)), Script("good", answer(3)))
    seen = send(relay, {"stream": True})
    names = [name for name, _ in events(seen)]
    assert names.count("message_start") == 1 and names.count("content_block_start") == 1
    text = "".join(d["delta"]["text"] for n, d in events(seen) if n == "content_block_delta")
    assert text == answer_text(3)
    assert relay.record(seen.generation_id).status == "completed"


def test_vendor_ignoring_max_tokens_is_cut_with_stop_reason_max_tokens(relay):
    relay.deploy("m", Script("v", answer(60)))
    seen = send(relay, {"stream": True, "max_tokens": 10})
    cut = cut_threshold(10)  # the safety net's margin for tokenizer differences
    received = events(seen)
    text = "".join(d["delta"]["text"] for n, d in received if n == "content_block_delta")
    assert text == answer_text(cut)
    assert [name for name, _ in received][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    delta = received[-2][1]
    assert (delta["delta"]["stop_reason"], delta["usage"]["output_tokens"]) == ("max_tokens", cut)
    record = relay.record(seen.generation_id)
    assert (record.completion_tokens, record.finish_reason) == (cut, "length")
