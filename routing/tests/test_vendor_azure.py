"""Azure OpenAI through the live router: both URL styles, both auths, filter annotations, errors, cancel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Cast, wait_settled
from fakevendors.azure import FakeAzure
from fakevendors.openai import PROMPT_TOKENS, words
from lib import tokens
from routing.tests.vendor_cast import (
    MESSAGES,
    cancel_and_measure,
    counted,
    delta_text,
    sse_chunks,
    tool_round_trip,
    vendor_cast,
)

KEY = "azure-key-for-tests-0123456789"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOi.entra-token-for-tests"
AZURE_ONLY = ("prompt_filter_results", "prompt_annotations", "content_filter_results", "content_filter_offsets")


@pytest.fixture
def fake_azure() -> Iterator[FakeAzure]:
    with FakeAzure(api_key=KEY) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def azure(live_router: Any, fake_azure: FakeAzure, transactional_db: None) -> Iterator[Any]:
    """Return a factory of casts on the fake Azure resource with the given options and credentials."""

    def make(options: dict[str, Any] | None = None, credentials: dict[str, Any] | None = None) -> Cast:
        return vendor_cast(
            live_router.url, fake_azure.url, "azure", options=options, credentials=credentials or {"api_key": KEY}
        )

    yield make
    wait_settled()


def assert_plain_openai(chunks: list[dict[str, Any]]) -> None:
    """Every chunk is an OpenAI chunk: choices with a delta, no Azure annotations anywhere."""
    for chunk in chunks:
        assert not set(AZURE_ONLY) & set(chunk), chunk
        assert chunk["object"] == "chat.completion.chunk" and chunk["id"].startswith("gen-")
        for choice in chunk["choices"]:
            assert "delta" in choice and not set(AZURE_ONLY) & set(choice), choice


def test_deployment_url_stream_drops_annotations_and_counts_usage(azure, fake_azure):
    cast = azure()
    fake_azure.scenario.tokens = 6
    response = cast.chat(stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200, response.text
    chunks = sse_chunks(response.text)
    assert_plain_openai(chunks)
    assert all(c["choices"] for c in chunks[:-1])  # the prompt_filter_results chunk is gone
    assert delta_text(chunks) == "".join(words(6))
    request = fake_azure.last()
    assert request.path == "/openai/deployments/fake-model/chat/completions"
    assert request.query["api-version"] == ["2024-10-21"]
    assert request.headers["api-key"] == KEY and "authorization" not in request.headers
    # 2024-10-21 has no stream_options: the router counts, and says so.
    assert "stream_options" not in request.json()
    prompt = tokens.count_messages([{"role": "user", "content": "Say something."}], "cl100k_base")
    assert chunks[-1]["usage"]["prompt_tokens"] == prompt and chunks[-1]["usage"]["completion_tokens"] == 6
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.usage_source, record.completion_tokens) == ("completed", "router", 6)
    assert (record.prompt_tokens, record.vendor_prompt_tokens, record.vendor_completion_tokens) == (prompt, None, None)


def test_v1_endpoint_with_entra_token_keeps_vendor_usage(azure, fake_azure):
    fake_azure.entra_token = TOKEN
    cast = azure(options={"api_style": "v1"}, credentials={"entra_token": TOKEN})
    fake_azure.scenario.tokens = 4
    response = cast.chat(stream=True)
    assert response.status_code == 200, response.text
    assert delta_text(sse_chunks(response.text)) == "".join(words(4))
    request = fake_azure.last()
    assert request.path == "/openai/v1/chat/completions" and "api-version" not in request.query
    assert request.headers["authorization"] == f"Bearer {TOKEN}" and "api-key" not in request.headers
    assert request.json()["model"] == "fake-model"
    assert request.json()["stream_options"] == {"include_usage": True}
    record = cast.record(response.headers["x-generation-id"])
    assert record.usage_source == "vendor"
    assert (record.vendor_prompt_tokens, record.vendor_completion_tokens) == (PROMPT_TOKENS, 4)
    assert (record.prompt_tokens, record.completion_tokens) == (PROMPT_TOKENS, 4)


def test_named_deployment_and_preview_api_version_ask_for_usage(azure, fake_azure):
    cast = azure(options={"api_version": "2024-12-01-preview", "deployment": "my gpt/4o"})
    response = cast.chat(stream=True)
    assert response.status_code == 200, response.text
    request = fake_azure.last()
    assert request.raw_target.startswith("/openai/deployments/my%20gpt%2F4o/chat/completions?")
    assert request.query["api-version"] == ["2024-12-01-preview"]
    assert request.json()["stream_options"] == {"include_usage": True}
    record = cast.record(response.headers["x-generation-id"])
    assert (record.usage_source, record.vendor_completion_tokens) == ("vendor", 5)


def test_asynchronous_filter_annotations_are_dropped(azure, fake_azure):
    cast = azure(options={"api_style": "v1"})
    fake_azure.async_filter = True
    fake_azure.scenario.tokens = 7
    response = cast.chat(stream=True)
    chunks = sse_chunks(response.text)
    assert_plain_openai(chunks)
    # role chunk, 7 words, finish: the 3 annotations between words and the one after the finish are gone.
    assert len(chunks) == 9
    assert delta_text(chunks) == "".join(words(7))
    assert [c["choices"][0]["finish_reason"] for c in chunks].count("stop") == 1
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.finish_reason, record.completion_tokens) == ("completed", "stop", 7)


def test_late_content_filter_block_becomes_finish_reason_content_filter(azure, fake_azure):
    cast = azure(options={"api_style": "v1"})
    fake_azure.async_filter = True
    fake_azure.scenario.tokens = 8
    fake_azure.content_filter_after = 3
    response = cast.chat(stream=True)
    assert response.status_code == 200
    chunks = sse_chunks(response.text)
    assert_plain_openai(chunks)
    assert delta_text(chunks) == "".join(words(3))
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]
    record = cast.record(response.headers["x-generation-id"])
    # Azure bills a filtered completion; no usage came, so the router bills what was delivered.
    assert (record.status, record.finish_reason, record.completion_tokens) == ("completed", "content_filter", 3)


def test_non_streamed_answer_has_no_annotations(azure, fake_azure):
    cast = azure()
    fake_azure.scenario.tokens = 4
    response = cast.chat()
    assert response.status_code == 200, response.text
    body = response.json()
    assert not set(AZURE_ONLY) & set(body)
    choice = body["choices"][0]
    assert not set(AZURE_ONLY) & set(choice)
    assert choice["message"]["content"] == "".join(words(4)) and choice["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == PROMPT_TOKENS
    record = cast.record(body["id"])
    assert (record.usage_source, record.vendor_prompt_tokens, record.vendor_completion_tokens) == ("vendor", 17, 4)


@pytest.mark.parametrize("stream", [True, False])
def test_tool_call_round_trip(azure, fake_azure, stream):
    cast = azure()
    fake_azure.scenario.tool_call = True
    _call, messages = tool_round_trip(cast, stream)
    sent = fake_azure.last().json()
    assert sent["messages"] == messages
    assert sent["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("stream", [True, False])
def test_filtered_prompt_is_a_400_content_filter(azure, fake_azure, stream):
    cast = azure()
    fake_azure.prompt_filtered = True
    response = cast.chat(stream=stream)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("content_filter", "messages", "invalid_request_error")
    assert "content filter" in error["message"] and "jailbreak" in error["message"]
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.error_code, record.http_status) == ("error", "content_filter", 400)


def test_errors_before_the_first_token(azure, fake_azure):
    cast = azure()
    fake_azure.scenario.status = 429
    fake_azure.scenario.retry_after = "7"
    fake_azure.scenario.error_body = {
        "error": {"code": "429", "message": "Requests to the deployment exceeded the rate limit."}
    }
    response = cast.chat(stream=True)
    assert response.status_code == 429
    assert "rate limit" in response.json()["error"]["message"]


def test_wrong_key_is_a_502_that_never_shows_it(live_router, fake_azure, transactional_db):
    cast = vendor_cast(live_router.url, fake_azure.url, "azure", credentials={"api_key": "wrong-key-1234567"})
    response = cast.chat(stream=True)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "vendor_auth_failed"
    assert "wrong-key-1234567" not in response.text and KEY not in response.text
    wait_settled()


def test_mid_stream_failure_ends_with_error_chunk(azure, fake_azure):
    cast = azure()
    fake_azure.scenario.tokens = 6
    fake_azure.scenario.reset_after = 2
    response = cast.chat(stream=True)
    assert response.status_code == 200
    chunks = sse_chunks(response.text)
    assert delta_text(chunks) == "".join(words(2))
    assert chunks[-1]["choices"][0]["finish_reason"] == "error" and chunks[-1]["error"]["message"]
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.completion_tokens) == ("error", 2)


def test_cancel_closes_azure_at_once_and_bills_delivered_tokens(azure, fake_azure):
    cast = azure(options={"api_version": "2025-04-01-preview"})
    fake_azure.async_filter = True
    fake_azure.scenario.tokens = 50
    fake_azure.scenario.token_delay = 0.1
    generation_id, received = cancel_and_measure(cast, fake_azure, 7)
    assert fake_azure.last().tokens_written < 50
    record = cast.record(generation_id)
    assert record.status == "cancelled"
    assert record.completion_tokens == record.tokens_delivered == counted(received) == 7
    assert record.vendor_completion_tokens is None  # no usage chunk came before the close
    assert record.prompt_tokens == tokens.count_messages(MESSAGES, "cl100k_base")


PRINCIPAL = ("tenant-0001", "client-0002", "entra-client-secret-for-tests")


def principal_cast(live_router: Any, fake_azure: FakeAzure, secret: str = PRINCIPAL[2]) -> Cast:
    fake_azure.principal = PRINCIPAL
    options = {"entra_tenant_id": PRINCIPAL[0], "entra_client_id": PRINCIPAL[1], "entra_authority": fake_azure.url}
    return vendor_cast(
        live_router.url, fake_azure.url, "azure", options=options, credentials={"entra_client_secret": secret}
    )


def test_service_principal_token_is_fetched_once_and_reused(live_router, fake_azure, transactional_db):
    cast = principal_cast(live_router, fake_azure)
    assert cast.chat(stream=True).status_code == 200
    assert cast.chat().status_code == 200
    assert fake_azure.tokens_issued == ["entra-fake-1"]
    answers = [r for r in fake_azure.requests if r.path.endswith("/chat/completions")]
    assert [r.headers["authorization"] for r in answers] == ["Bearer entra-fake-1"] * 2
    wait_settled()


def test_service_principal_token_is_refreshed_before_expiry(live_router, fake_azure, transactional_db):
    cast = principal_cast(live_router, fake_azure)
    fake_azure.token_lifetime = 60  # inside the router's refresh margin: every request needs a new one
    assert cast.chat().status_code == 200
    assert cast.chat().status_code == 200
    assert fake_azure.tokens_issued == ["entra-fake-1", "entra-fake-2"]
    assert fake_azure.last().headers["authorization"] == "Bearer entra-fake-2"
    wait_settled()


def test_service_principal_with_wrong_secret_is_a_502_that_never_shows_it(live_router, fake_azure, transactional_db):
    cast = principal_cast(live_router, fake_azure, secret="not-the-secret-42")
    response = cast.chat(stream=True)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "vendor_auth_failed"
    assert "not-the-secret-42" not in response.text and "AADSTS" not in response.text
    assert not [r for r in fake_azure.requests if r.path.endswith("/chat/completions")]
    wait_settled()
