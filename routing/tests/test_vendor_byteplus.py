"""BytePlus ModelArk through the live router: reasoning text, its error codes, its parameter rules, cancel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Cast, wait_settled
from fakevendors.byteplus import REQUEST_ID, FakeBytePlus
from fakevendors.openai import PROMPT_TOKENS, words
from lib import tokens
from routing.errors import UPSTREAM_MESSAGES
from routing.tests.vendor_cast import MESSAGES, cancel_and_measure, delta_text, sse_chunks, tool_round_trip, vendor_cast

KEY = "ark-key-for-tests-0123456789abcdef"
ENDPOINT = "ep-20250101000000-abcde"


@pytest.fixture
def fake_byteplus() -> Iterator[FakeBytePlus]:
    with FakeBytePlus(api_key=KEY) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def byteplus(live_router: Any, fake_byteplus: FakeBytePlus, transactional_db: None) -> Iterator[Cast]:
    yield vendor_cast(live_router.url, fake_byteplus.url, "byteplus", credentials={"api_key": KEY}, upstream=ENDPOINT)
    wait_settled()


def test_stream_relays_reasoning_then_content(byteplus, fake_byteplus):
    fake_byteplus.scenario.tokens = 8
    fake_byteplus.reasoning_tokens = 3
    response = byteplus.chat(stream=True)
    assert response.status_code == 200, response.text
    chunks = sse_chunks(response.text)
    assert delta_text(chunks, "reasoning_content") == "".join(words(3))
    assert delta_text(chunks) == "".join(words(8)[3:])
    request = fake_byteplus.last()
    assert request.path == "/api/v3/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json()["model"] == ENDPOINT
    assert request.json()["stream_options"] == {"include_usage": True}
    record = byteplus.record(response.headers["x-generation-id"])
    assert (record.status, record.usage_source) == ("completed", "vendor")
    assert (record.vendor_prompt_tokens, record.vendor_completion_tokens) == (PROMPT_TOKENS, 8)
    assert (record.prompt_tokens, record.completion_tokens, record.reasoning_tokens) == (PROMPT_TOKENS, 8, 3)
    assert record.tokens_delivered == 8  # reasoning text counts as delivered


def test_non_streamed_answer_keeps_reasoning_content(byteplus, fake_byteplus):
    fake_byteplus.scenario.tokens = 6
    fake_byteplus.reasoning_tokens = 2
    response = byteplus.chat()
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    assert message["reasoning_content"] == "".join(words(2))
    assert message["content"] == "".join(words(6)[2:])
    assert response.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2
    record = byteplus.record(response.json()["id"])
    assert (record.vendor_completion_tokens, record.reasoning_tokens, record.tokens_delivered) == (6, 2, 6)


@pytest.mark.parametrize("stream", [True, False])
def test_tool_call_round_trip(byteplus, fake_byteplus, stream):
    fake_byteplus.scenario.tool_call = True
    _call, messages = tool_round_trip(byteplus, stream)
    assert fake_byteplus.last().json()["messages"] == messages


def test_only_max_completion_tokens_is_sent_when_both_are_given(byteplus, fake_byteplus):
    response = byteplus.chat(max_tokens=3, max_completion_tokens=4, stream=True)
    assert response.status_code == 200, response.text  # the fake rejects both together, as ModelArk does
    sent = fake_byteplus.last().json()
    assert sent["max_completion_tokens"] == 4 and "max_tokens" not in sent
    assert delta_text(sse_chunks(response.text)) == "".join(words(4))
    response = byteplus.chat(max_tokens=3)
    assert fake_byteplus.last().json()["max_tokens"] == 3


def test_more_than_four_stop_sequences_never_reach_the_vendor(byteplus, fake_byteplus):
    response = byteplus.chat(stop=["a", "b", "c", "d", "e"])
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stop"
    assert fake_byteplus.requests == []
    assert byteplus.chat(stop=["a", "b", "c", "d"]).status_code == 200
    assert fake_byteplus.last().json()["stop"] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("code", "status", "client_code"),
    [
        ("RateLimitExceeded.EndpointRPMExceeded", 429, "upstream_rate_limited"),
        ("RateLimitExceeded.EndpointTPMExceeded", 429, "upstream_rate_limited"),
        ("AuthenticationError", 502, "vendor_auth_failed"),
        ("AccountOverdueError", 502, "vendor_account_refused"),
        ("AccessDenied", 502, "vendor_account_refused"),
        ("InvalidEndpoint.NotFound", 502, "upstream_model_unavailable"),
        ("InvalidEndpointOrModel.NotFound", 502, "upstream_model_unavailable"),
        ("SensitiveContentDetected", 400, "content_filter"),
        ("MissingParameter", 400, "upstream_invalid_request"),
        ("InvalidParameter", 400, "upstream_invalid_request"),
        ("InternalServiceError", 502, "upstream_error"),
    ],
)
def test_error_codes_before_the_first_token(byteplus, fake_byteplus, code, status, client_code):
    fake_byteplus.fail_with(code)
    response = byteplus.chat(stream=True)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == client_code
    assert KEY not in response.text and ENDPOINT not in response.text
    # The router's words for the class; ModelArk's message (and its request id) are the operator's.
    assert error["message"] == UPSTREAM_MESSAGES[client_code] and REQUEST_ID not in response.text
    record = byteplus.record(response.headers["x-generation-id"])
    assert (record.status, record.http_status, record.error_code) == ("error", status, client_code)
    if client_code in ("upstream_rate_limited", "upstream_invalid_request", "upstream_error"):
        assert record.attempts[0]["vendor_code"] == code
    if client_code == "vendor_account_refused":
        # What is wrong with the operator's account is the operator's to read, not the client's.
        assert record.attempts[0]["vendor_code"] in ("vendor_account_overdue", "vendor_access_denied")
        assert "overdue" not in response.text.lower() and "denied" not in response.text.lower()
    if code == "AuthenticationError":
        assert "credentials" in record.error_message and "API key" in record.error_message


def test_wrong_key_is_reported_as_vendor_credentials_problem(live_router, fake_byteplus, transactional_db):
    cast = vendor_cast(live_router.url, fake_byteplus.url, "byteplus", credentials={"api_key": "ark-wrong-999"})
    response = cast.chat()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "vendor_auth_failed"
    assert "ark-wrong-999" not in response.text
    wait_settled()


@pytest.mark.parametrize(
    ("code", "client_code"),
    [("RateLimitExceeded.EndpointTPMExceeded", "upstream_rate_limited"), ("InternalServiceError", "upstream_error")],
)  # fmt: skip
def test_error_block_inside_the_stream_ends_with_error_chunk(byteplus, fake_byteplus, code, client_code):
    fake_byteplus.scenario.tokens = 6
    fake_byteplus.scenario.error_after = 2
    fake_byteplus.stream_error_code = code
    response = byteplus.chat(stream=True)
    assert response.status_code == 200
    chunks = sse_chunks(response.text)
    assert delta_text(chunks) == "".join(words(2))
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "error" and last["error"]["code"] == client_code
    record = byteplus.record(response.headers["x-generation-id"])
    assert (record.status, record.error_code, record.completion_tokens) == ("error", client_code, 2)


def test_cancel_during_reasoning_closes_vendor_and_bills_delivered_reasoning(byteplus, fake_byteplus):
    fake_byteplus.scenario.tokens = 50
    fake_byteplus.scenario.token_delay = 0.1
    fake_byteplus.reasoning_tokens = 40
    generation_id, received = cancel_and_measure(byteplus, fake_byteplus, 6, field="reasoning_content")
    assert fake_byteplus.last().tokens_written < 50
    record = byteplus.record(generation_id)
    assert record.status == "cancelled"
    assert record.completion_tokens == record.tokens_delivered == tokens.count_text(received, "cl100k_base") == 6
    assert record.vendor_completion_tokens is None
    assert record.prompt_tokens == tokens.count_messages(MESSAGES, "cl100k_base")
