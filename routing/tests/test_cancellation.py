"""A client that goes away stops the vendor at once and is billed for what it received.

Against a live router where the disconnect must be noticed on a real socket; what is billed
once it is, in process (``test_relay_inprocess_cancellation`` and the last tests here).
"""

from __future__ import annotations

import socket
import threading
import time
from decimal import Decimal

import orjson

from billing.cost import Prices, TokenCounts, cost_compute
from fakevendors.openai import PROMPT_TOKENS
from lib import tokens
from routing.tests.inprocess import Exchange
from routing.tests.sse_client import RawStream, content_of

CLOSE_BOUND = 0.100  # seconds from the client's close to the vendor seeing its socket close
MESSAGES = [{"role": "user", "content": "Tell me a long story about a cat."}]


def open_stream(cast, **body):
    return RawStream(cast.url, cast.key, {"model": cast.model, "messages": MESSAGES, "stream": True, **body})


def test_cancel_mid_stream_closes_vendor_and_bills_delivered_tokens(cast, fake_openai):
    fake_openai.scenario.tokens = 50
    fake_openai.scenario.token_delay = 0.2
    stream = open_stream(cast)
    received = ""
    while received.count(" ") < 7:
        received += content_of(stream.next_data())
    generation_id = stream.headers["x-generation-id"]
    closed = stream.close()
    request = fake_openai.last()
    seen = fake_openai.wait_closed(request)
    assert seen is not None, "the vendor never saw the client's close"
    assert seen - closed < CLOSE_BOUND
    assert request.tokens_written < 50  # generation stopped
    record = cast.record(generation_id)
    assert record.status == "cancelled"
    assert record.completion_tokens == 7 == tokens.count_text(received, "cl100k_base")
    assert record.tokens_delivered == 7
    # No usage chunk came before the close, so the prompt was counted by the router.
    assert record.prompt_tokens == tokens.count_messages(MESSAGES, "cl100k_base")
    assert record.usage_source == "router"
    prices = Prices(Decimal(1), Decimal(2), Decimal(1), Decimal(2), Decimal(0))
    assert record.cost == cost_compute(prices, TokenCounts(record.prompt_tokens, 7))


def test_cancel_before_first_token_closes_vendor(cast, fake_openai):
    fake_openai.scenario.first_token_delay = 5.0
    stream = open_stream(cast)
    request = fake_openai.last()
    time.sleep(0.2)
    closed = stream.close()
    seen = fake_openai.wait_closed(request)
    assert seen is not None and seen - closed < CLOSE_BOUND
    assert request.tokens_written == 0
    record = cast.record(_generation_of(cast))
    assert (record.status, record.completion_tokens) == ("cancelled", 0)
    assert record.prompt_tokens == tokens.count_messages(MESSAGES, "cl100k_base")


def test_cancel_after_keepalive_before_first_token(cast, fake_openai):
    fake_openai.scenario.first_token_delay = 5.0
    stream = open_stream(cast)
    assert stream.next_event() == b": Siraya Model Router PROCESSING"
    request = fake_openai.last()
    closed = stream.close()
    seen = fake_openai.wait_closed(request)
    assert seen is not None and seen - closed < CLOSE_BOUND
    record = cast.record(stream.headers["x-generation-id"])
    assert (record.status, record.completion_tokens) == ("cancelled", 0)


def test_cancel_during_non_streaming_wait(cast, fake_openai):
    fake_openai.scenario.tokens = 20
    fake_openai.scenario.first_token_delay = 5.0
    body = orjson.dumps({"model": cast.model, "messages": MESSAGES})
    host, port = cast.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {cast.key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    request = fake_openai.last()
    time.sleep(0.2)
    closed = time.monotonic()
    sock.close()
    seen = fake_openai.wait_closed(request)
    assert seen is not None and seen - closed < CLOSE_BOUND
    record = cast.record(_generation_of(cast))
    assert (record.status, record.streamed, record.completion_tokens) == ("cancelled", False, 0)


def tool_arguments(exchange: Exchange) -> str:
    return "".join(
        call["function"].get("arguments", "")
        for chunk in exchange.chunks()
        for choice in chunk["choices"]
        for call in (choice.get("delta") or {}).get("tool_calls") or []
    )


def test_cancel_bills_tool_call_arguments(relay_openai, fake_openai):
    """In process: what is billed is relay logic; how the disconnect is noticed is tested above."""
    fake_openai.scenario.tokens = 30
    fake_openai.scenario.token_delay = 0.1
    fake_openai.scenario.tool_call = True
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    leave = {"disconnect_when": lambda exchange: tool_arguments(exchange).count(" ") >= 4}
    seen = relay_openai.chat(stream=True, messages=MESSAGES, tools=tools, exchange=leave)
    record = relay_openai.record(seen.generation_id)
    assert record.status == "cancelled"
    assert record.completion_tokens == 4


def test_vendor_usage_wins_when_the_stream_completes(relay_openai, fake_openai):
    fake_openai.scenario.tokens = 4
    seen = relay_openai.chat(stream=True, messages=MESSAGES)
    assert seen.events()[-1] == "[DONE]"
    record = relay_openai.record(seen.generation_id)
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", PROMPT_TOKENS, 4)
    assert record.usage_source == "vendor"


def test_many_concurrent_cancellations_each_bill_exactly(cast, fake_openai):
    fake_openai.scenario.tokens = 40
    # Wide gaps between tokens: on a loaded 2-core machine a client thread may take tens of
    # milliseconds between reading its last chunk and closing.
    fake_openai.scenario.token_delay = 0.25
    results: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def one(stop_after: int) -> None:
        try:
            stream = open_stream(cast)
            received = ""
            while received.count(" ") < stop_after:
                received += content_of(stream.next_data())
            stream.close()
            results.append((stream.headers["x-generation-id"], tokens.count_text(received, "cl100k_base")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(1 + i % 9,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(results) == 12
    for generation_id, delivered in results:
        record = cast.record(generation_id)
        assert (record.status, record.completion_tokens) == ("cancelled", delivered)
    deadline = time.monotonic() + 2
    while any(r.closed_at is None for r in fake_openai.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(r.closed_at is not None for r in fake_openai.requests)


def _generation_of(cast) -> str:
    from billing.models import UsageRecord

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        record = UsageRecord.objects.filter(api_key=cast.api_key).order_by("-id").first()
        if record is not None:
            return record.generation_id
        time.sleep(0.01)
    raise AssertionError("no usage record")
