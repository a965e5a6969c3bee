"""OneRouter through the live router: comment lines, usage.include, mid-stream error events, cancel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from conftest import Cast, wait_settled
from fakevendors.onerouter import COMMENT, FakeOneRouter
from fakevendors.openai import PROMPT_TOKENS, words
from lib import tokens
from routing.errors import UPSTREAM_MESSAGES
from routing.tests.sse_client import RawStream
from routing.tests.vendor_cast import MESSAGES, cancel_and_measure, delta_text, sse_chunks, tool_round_trip, vendor_cast
from routing.vendors.sse import SseDecoder

KEY = "or-key-for-tests-0123456789abcdef"


@pytest.fixture
def fake_onerouter() -> Iterator[FakeOneRouter]:
    with FakeOneRouter(api_key=KEY) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def onerouter(live_router: Any, fake_onerouter: FakeOneRouter, transactional_db: None) -> Iterator[Cast]:
    upstream = "claude-3-5-sonnet@20240620"
    yield vendor_cast(live_router.url, fake_onerouter.url + "/v1", "onerouter", credentials={"api_key": KEY}, upstream=upstream)  # fmt: skip
    wait_settled()


def test_decoder_skips_onerouter_comment_lines_split_anywhere():
    chunk = b'data: {"choices": [{"index": 0, "delta": {"content": " hi"}}]}\n\n'
    wire = COMMENT + COMMENT + chunk + COMMENT + chunk.replace(b"\n\n", b"\r\n\r\n") + COMMENT + b"data: [DONE]\n\n"
    for size in (1, 2, 3, 7, 16, len(wire)):
        decoder = SseDecoder()
        events = [e for i in range(0, len(wire), size) for e in decoder.feed(wire[i : i + size])] + decoder.close()
        assert [e.data for e in events] == [chunk[6:-2], chunk[6:-2], b"[DONE]"], size


def test_stream_ignores_comments_and_keeps_vendor_usage(onerouter, fake_onerouter):
    fake_onerouter.scenario.tokens = 6
    stream = RawStream(onerouter.url, onerouter.key, {"model": onerouter.model, "messages": MESSAGES, "stream": True})
    events = []
    while (event := stream.next_event()) is not None:
        events.append(event)
        if event == b"data: [DONE]":
            break
    stream.close()
    assert not any(b"ONEROUTER" in e for e in events)  # the vendor's comments are not relayed
    chunks = [orjson.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    assert delta_text(chunks) == "".join(words(6))
    sent = fake_onerouter.last().json()
    assert sent["usage"] == {"include": True} and sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "claude-3-5-sonnet@20240620"
    assert fake_onerouter.last().headers["authorization"] == f"Bearer {KEY}"
    record = onerouter.record(stream.headers["x-generation-id"])
    assert (record.status, record.usage_source) == ("completed", "vendor")
    assert (record.vendor_prompt_tokens, record.vendor_completion_tokens) == (PROMPT_TOKENS, 6)
    assert (record.prompt_tokens, record.completion_tokens) == (PROMPT_TOKENS, 6)


def test_usage_chunk_for_the_client_has_router_shape(onerouter, fake_onerouter):
    response = onerouter.chat(stream=True, stream_options={"include_usage": True})
    usage = sse_chunks(response.text)[-1]["usage"]
    assert usage["completion_tokens"] == 5 and "cost" not in usage  # the vendor's cost is not the client's price


def test_non_streamed_answer(onerouter, fake_onerouter):
    fake_onerouter.scenario.tokens = 3
    response = onerouter.chat()
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "".join(words(3))
    assert fake_onerouter.last().json()["usage"] == {"include": True}
    record = onerouter.record(response.json()["id"])
    assert (record.vendor_prompt_tokens, record.vendor_completion_tokens, record.usage_source) == (17, 3, "vendor")


@pytest.mark.parametrize("stream", [True, False])
def test_tool_call_round_trip(onerouter, fake_onerouter, stream):
    fake_onerouter.scenario.tool_call = True
    _call, messages = tool_round_trip(onerouter, stream)
    assert fake_onerouter.last().json()["messages"] == messages


@pytest.mark.parametrize(
    ("vendor_code", "status", "client_code"),
    [
        (400, 400, "upstream_invalid_request"),
        (401, 502, "vendor_auth_failed"),
        (402, 502, "vendor_account_refused"),
        (408, 504, "upstream_timeout"),
        (429, 429, "upstream_rate_limited"),
        (503, 502, "upstream_error"),
    ],
)
def test_errors_before_the_first_token_keep_the_status(onerouter, fake_onerouter, vendor_code, status, client_code):
    fake_onerouter.fail_with(vendor_code)
    response = onerouter.chat(stream=True)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == client_code and set(error) == {"message", "type", "code", "param"}
    assert error["message"] == UPSTREAM_MESSAGES[client_code]
    assert KEY not in response.text
    record = onerouter.record(response.headers["x-generation-id"])
    assert (record.status, record.http_status, record.attempts[0]["vendor_status"]) == ("error", status, vendor_code)
    if client_code == "vendor_account_refused":
        assert record.attempts[0]["vendor_code"] == "vendor_insufficient_credits"
        assert "credits" not in response.text


def test_mid_stream_error_event_becomes_the_router_error_chunk(onerouter, fake_onerouter):
    fake_onerouter.scenario.tokens = 6
    fake_onerouter.scenario.error_after = 2
    response = onerouter.chat(stream=True)
    assert response.status_code == 200
    chunks = sse_chunks(response.text)
    assert delta_text(chunks) == "".join(words(2))
    last = chunks[-1]
    assert last["id"] == response.headers["x-generation-id"] and last["model"] == "test/fake"
    assert last["choices"] == [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
    assert last["error"]["code"] == "upstream_error" and "Provider disconnected" not in response.text
    assert "provider" not in last  # the vendor's own chunk is not relayed
    record = onerouter.record(response.headers["x-generation-id"])
    assert (record.status, record.completion_tokens, record.error_code) == ("error", 2, "upstream_error")
    assert "Provider disconnected" in record.error_message and record.attempts[0]["vendor_status"] == 502


def test_cancel_closes_onerouter_at_once_and_bills_delivered_tokens(onerouter, fake_onerouter):
    fake_onerouter.scenario.tokens = 50
    fake_onerouter.scenario.token_delay = 0.1
    generation_id, received = cancel_and_measure(onerouter, fake_onerouter, 5)
    assert fake_onerouter.last().tokens_written < 50
    record = onerouter.record(generation_id)
    assert record.status == "cancelled"
    assert record.completion_tokens == record.tokens_delivered == tokens.count_text(received, "cl100k_base") == 5
    assert record.prompt_tokens == tokens.count_messages(MESSAGES, "cl100k_base")
