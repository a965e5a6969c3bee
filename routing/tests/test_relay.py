"""The relay end to end with the fake OpenAI vendor on loopback, the router in process.

The ASGI application is called in process (``routing.tests.inprocess``); the vendor is the real
OpenAI adapter talking to the fake over a socket. What only a router process shows (disconnect
detection, slow clients, signals) is tested against one in ``test_cancellation`` and
``test_slow_clients_and_shutdown``.
"""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from billing.models import UsageRecord
from fakevendors.openai import PROMPT_TOKENS, words
from routing.tests.inprocess import InProcessRelay
from routing.tests.sse_client import content_of

CHAT = "/v1/chat/completions"


@pytest.fixture
def cast(relay_openai: InProcessRelay) -> InProcessRelay:
    return relay_openai


def sse_payloads(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def test_stream_relays_chunks_in_openai_format(cast, fake_openai):
    fake_openai.scenario.tokens = 6
    response = cast.chat(stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    generation_id = response.headers["x-generation-id"]
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert {c["id"] for c in chunks} == {generation_id}
    assert generation_id.startswith("gen-")
    assert {c["model"] for c in chunks} == {"test/fake"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert "".join(content_of(c) for c in chunks) == "".join(words(6))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # The client did not ask for usage: no usage chunk, but the vendor was asked for it.
    assert all(c["choices"] for c in chunks)
    assert fake_openai.last().json()["stream_options"] == {"include_usage": True}
    assert fake_openai.last().json()["model"] == "fake-model"
    record = cast.record(generation_id)
    assert (record.status, record.streamed, record.usage_source) == ("completed", True, "vendor")
    assert (record.prompt_tokens, record.completion_tokens) == (PROMPT_TOKENS, 6)
    # $1 / Mtok in, $2 / Mtok out.
    assert record.cost == Decimal(PROMPT_TOKENS * 1 + 6 * 2) / 1_000_000
    assert record.vendor_name == "fake" and record.upstream_model == "fake-model"


def test_usage_chunk_forwarded_only_when_asked(cast, fake_openai):
    fake_openai.scenario.tokens = 3
    response = cast.chat(stream=True, stream_options={"include_usage": True})
    chunks = [orjson.loads(p) for p in sse_payloads(response.text)[:-1]]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert usage_chunk["usage"]["completion_tokens"] == 3
    assert usage_chunk["usage"]["total_tokens"] == PROMPT_TOKENS + 3


def test_non_streaming_answer(cast, fake_openai):
    fake_openai.scenario.tokens = 4
    response = cast.chat(max_tokens=50, temperature=0.5)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"] == response.headers["x-generation-id"]
    assert body["model"] == "test/fake"
    assert body["choices"][0]["message"]["content"] == "".join(words(4))
    assert body["usage"]["completion_tokens"] == 4
    sent = fake_openai.last().json()
    assert sent["temperature"] == 0.5 and sent["max_tokens"] == 50 and "stream" not in sent
    record = cast.record(body["id"])
    assert (record.status, record.streamed, record.completion_tokens) == ("completed", False, 4)


def test_keepalive_comments_before_first_token_and_during_stalls(cast, fake_openai, settings):
    settings.SIRAYA_KEEPALIVE_SECONDS = 0.1  # a keepalive after 0.1 s without data
    fake_openai.scenario.tokens = 3
    fake_openai.scenario.first_token_delay = 0.35
    fake_openai.scenario.token_delay = 0.25
    response = cast.chat(stream=True, messages=[{"role": "user", "content": "hi"}])
    events = [event.strip(b"\n") for event in response.raw.split(b"\n\n") if event.strip(b"\n")]
    comments_before_first = 0
    for event in events:
        if event.startswith(b"data:"):
            break
        comments_before_first += event == b": Siraya Model Router PROCESSING"
    assert comments_before_first >= 2
    first_data = next(i for i, e in enumerate(events) if e.startswith(b"data:"))
    assert b": Siraya Model Router PROCESSING" in events[first_data:]
    assert events[-1] == b"data: [DONE]"


def test_mid_stream_vendor_error_ends_with_error_chunk_and_done(cast, fake_openai):
    fake_openai.scenario.tokens = 5
    fake_openai.scenario.error_after = 2
    response = cast.chat(stream=True)
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    last = orjson.loads(payloads[-2])
    assert last["choices"][0]["finish_reason"] == "error"
    assert last["error"] == {"code": "upstream_error", "message": "The vendor could not serve this request.",
                             "type": "upstream_error"}  # fmt: skip
    assert "fake mid-stream failure" not in response.text  # the vendor's words are the operator's
    record = cast.record(response.headers["x-generation-id"])
    assert record.status == "error" and "fake mid-stream failure" in record.error_message
    assert record.completion_tokens == 2  # the two tokens the client received


@pytest.mark.parametrize(
    ("vendor_status", "client_status"),
    [(500, 502), (503, 502), (429, 429), (400, 400)],
)
def test_vendor_error_before_stream_keeps_real_status(cast, fake_openai, vendor_status, client_status):
    fake_openai.scenario.status = vendor_status
    response = cast.chat(stream=True)
    assert response.status_code == client_status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert "sk-vendor-secret-for-tests" not in response.text
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.http_status, record.cost) == ("error", client_status, Decimal(0))


def test_vendor_unreachable_is_502(cast):
    from routing.models import Vendor

    Vendor.objects.filter(name="fake").update(base_url="http://127.0.0.1:9/v1")
    response = cast.chat()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"


def test_vendor_timeout_is_504(cast, fake_openai):
    from routing.models import Vendor

    Vendor.objects.filter(name="fake").update(first_byte_timeout=0.3)
    fake_openai.scenario.hang_after = 0
    response = cast.chat(stream=True)
    assert response.status_code in (200, 504)  # a keepalive may already have started the stream
    record = cast.record(response.headers["x-generation-id"])
    assert record.status == "error" and record.error_code == "upstream_timeout"
    fake_openai.scenario.hang_after = None
    response = cast.chat()
    assert response.status_code == 200


def test_vendor_timeout_before_keepalive_gets_504_status(cast, fake_openai):
    from routing.models import Vendor

    Vendor.objects.filter(name="fake").update(first_byte_timeout=0.1)
    fake_openai.scenario.hang_after = 0
    response = cast.chat(stream=True)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "test/fake"}', "messages"),
        (b'{"model": "test/fake", "messages": [{"role": "robot", "content": "x"}]}', "messages[0].role"),
        (b'{"model": "test/fake", "messages": [{"role": "user", "content": "x"}], "temperature": 7}', "temperature"),
        (b'{"model": "test/fake", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}', "max_tokens"),
        (b'{"model": "test/fake", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (b'{"model": "test/fake", "messages": [{"role": "user", "content": "x"}], "bogus": 1}', "bogus"),
    ],
)
def test_invalid_requests_get_400_naming_the_field(cast, body, param):
    response = cast.exchange(body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if param:
        assert param.split("[")[0] in error["message"]


def test_auth_errors_are_401(cast):
    body = {"model": cast.model, "messages": [{"role": "user", "content": "x"}]}
    assert cast.exchange(body, key="").json()["error"]["code"] == "missing_api_key"
    unknown = cast.exchange(body, key="sk-siraya-nope")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (401, "invalid_api_key")
    from billing.services import api_key_revoke

    api_key_revoke(cast.api_key)
    revoked = cast.exchange(body)
    assert (revoked.status_code, revoked.json()["error"]["code"]) == (401, "revoked_api_key")


def test_expired_key_is_401(cast):
    from datetime import timedelta

    from django.utils import timezone

    from billing.models import ApiKey

    ApiKey.objects.filter(pk=cast.api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = cast.chat()
    assert (response.status_code, response.json()["error"]["code"]) == (401, "expired_api_key")


def test_unknown_model_is_404_and_recorded(cast):
    response = cast.chat(model="nope/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    record = UsageRecord.objects.get(generation_id=response.headers["x-generation-id"])
    assert (record.status, record.http_status, record.cost) == ("error", 404, Decimal(0))


def test_body_over_limit_is_413(cast):
    big = b'{"model": "test/fake", "messages": [{"role": "user", "content": "' + b"x" * (5 * 1024 * 1024) + b'"}]}'
    response = cast.exchange(big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_get_on_chat_completions_is_405(cast):
    response = cast.exchange(method="GET")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_models_endpoint_lists_prices(cast):
    response = cast.exchange(path="/v1/models", method="GET")
    assert response.status_code == 200
    (model,) = response.json()["data"]
    assert model["id"] == "test/fake"
    assert Decimal(model["pricing"]["input"]) == 1 and Decimal(model["pricing"]["output"]) == 2
    assert cast.exchange(path="/v1/models", method="GET", key="").status_code == 401


def test_generation_endpoint_is_scoped_to_the_key(cast, fake_openai):
    from billing.services import api_key_create

    response = cast.chat()
    generation_id = response.json()["id"]
    cast.record(generation_id)
    query = f"id={generation_id}".encode()
    mine = cast.exchange(path="/v1/generation", method="GET", query=query)
    assert mine.status_code == 200
    data = mine.json()["data"]
    assert (data["status"], data["completion_tokens"], data["usage_source"]) == ("completed", 5, "vendor")
    assert data["vendor"] == "fake" and data["timings"]["total_ms"] is not None
    _, other = api_key_create("someone else")
    theirs = cast.exchange(path="/v1/generation", method="GET", query=query, key=other)
    assert theirs.status_code == 404
