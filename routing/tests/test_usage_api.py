"""Each client API's requests are recorded as coming through it: answered, refused and failed ones alike."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from billing.models import UsageApi, UsageRecord
from routing.relay.entry import APIS
from routing.tests.inprocess import Script, answer, failure

# What each API's smallest request for model "m" looks like.
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages": {"max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"input": "hi"},
}
EXPECTED = {
    "/v1/chat/completions": UsageApi.CHAT_COMPLETIONS,
    "/v1/messages": UsageApi.MESSAGES,
    "/v1/responses": UsageApi.RESPONSES,
}


def post(relay, path: str, stream: bool = False, **body: Any):
    payload = orjson.dumps({"model": "m", **BODIES[path], **body, "stream": stream})
    return relay.exchange(payload, path=path)


def test_every_dialect_names_a_usage_api_of_its_own():
    assert set(EXPECTED) == set(APIS)
    assert {path: dialect.api for path, dialect in APIS.items()} == EXPECTED
    assert {dialect.api for dialect in APIS.values()} <= set(UsageApi.values)


@pytest.mark.parametrize("path", sorted(EXPECTED))
@pytest.mark.parametrize("stream", [False, True])
def test_answered_request_is_recorded_with_its_api(relay, path, stream):
    relay.deploy("m", Script("v", answer(3)))
    seen = post(relay, path, stream=stream)
    assert seen.status == 200
    record = relay.record(seen.generation_id)
    assert (record.api, record.status, record.streamed) == (EXPECTED[path], "completed", stream)


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_refused_and_failed_requests_are_recorded_with_their_api(relay, path):
    relay.deploy("m", Script("v", error=failure(500)))
    failed = post(relay, path)
    unknown = post(relay, path, model="no-such-model")
    assert (failed.status, unknown.status) == (502, 404)
    records = {r.generation_id: r for r in UsageRecord.objects.filter(api_key=relay.api_key)}
    assert {records[failed.generation_id].api, records[unknown.generation_id].api} == {EXPECTED[path]}
    assert records[unknown.generation_id].error_code == "model_not_found"


def test_generation_endpoint_says_which_api(relay, client):
    relay.deploy("m", Script("v", answer(3)))
    seen = post(relay, "/v1/messages")
    response = client.get(
        "/v1/generation", {"id": seen.generation_id}, headers={"authorization": f"Bearer {relay.key}"}
    )
    assert response.status_code == 200
    assert response.json()["data"]["api"] == "messages"
