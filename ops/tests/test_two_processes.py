"""Two router processes on one machine sharing PostgreSQL and Redis behave as one.

Needs PostgreSQL (DATABASE_URL) and Redis (REDIS_URL); skipped when they are not configured,
failed instead when SIRAYA_REQUIRE_SERVICES=1 (CI's second pass). Each property is one test
against the ``pair`` fixture, so the lead can add credit limits, rate limits and cooldowns
as further tests of the same shape.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from django.conf import settings
from django.db import connection

from billing.models import ApiKey, UsageRecord
from billing.services import api_key_revoke
from conftest import Cast, LiveServer, wait_settled
from ops.tests.conftest import make_demo_cast
from ops.tests.test_operations import LONG, open_stream
from routing.models import Vendor


def services_or_skip() -> None:
    missing = []
    if connection.vendor != "postgresql":
        missing.append("PostgreSQL (DATABASE_URL)")
    if not settings.REDIS_URL:
        missing.append("Redis (REDIS_URL)")
    if missing:
        reason = "two-process deployment needs " + " and ".join(missing)
        if os.environ.get("SIRAYA_REQUIRE_SERVICES") == "1":
            pytest.fail(reason + " (SIRAYA_REQUIRE_SERVICES=1)")
        pytest.skip(reason)


@dataclass
class Pair:
    a: LiveServer
    b: LiveServer
    cast: Cast  # its url is a's

    def chat(self, server: LiveServer, content: str, **body) -> httpx.Response:
        payload = {"model": self.cast.model, "messages": [{"role": "user", "content": content}], **body}
        return httpx.post(server.url + "/v1/chat/completions", json=payload, headers=self.cast.headers(), timeout=60)


@pytest.fixture
def pair(server_factory, transactional_db):
    services_or_skip()
    env = {"REDIS_URL": settings.REDIS_URL, "SIRAYA_REDIS_PREFIX": settings.SIRAYA_REDIS_PREFIX}
    a = server_factory(env, name="pair-a")
    b = server_factory(env, name="pair-b")
    yield Pair(a, b, make_demo_cast(a.url))
    wait_settled()


def test_usage_records_one_per_request_whichever_process_served_it(pair):
    servers = [pair.a, pair.b] * 10
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda server: pair.chat(server, "the same request"), servers))
    assert [r.status_code for r in responses] == [200] * 20
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 20
    records = UsageRecord.objects.filter(api_key=pair.cast.api_key)
    wait_settled()
    assert records.count() == 20
    assert set(records.values_list("generation_id", flat=True)) == ids
    assert set(records.values_list("status", flat=True)) == {"completed"}
    # The same request, whichever process served it: the same tokens and the same bill.
    assert len({(r.prompt_tokens, r.completion_tokens, r.cost) for r in records}) == 1
    assert records.first().cost > 0


def test_concurrent_stream_cap_is_shared_across_processes(pair):
    ApiKey.objects.filter(pk=pair.cast.api_key.pk).update(max_concurrent_streams=2)
    Vendor.objects.filter(name="demo-instant").update(options={"token_delay": 0.1})
    streams = [open_stream(pair.a.url, pair.cast), open_stream(pair.b.url, pair.cast)]
    try:
        for server in (pair.a, pair.b):
            response = pair.chat(server, "third", stream=True)
            assert response.status_code == 429, response.text
            assert response.json()["error"]["code"] == "concurrent_streams_exceeded"
    finally:
        for stream in streams:
            stream.close()
    wait_settled()
    response = pair.chat(pair.b, LONG[:20], stream=True)
    assert response.status_code == 200


def test_revocation_in_one_process_is_seen_by_the_other(pair):
    assert pair.chat(pair.b, "before").status_code == 200
    api_key_revoke(pair.cast.api_key)
    for server in (pair.a, pair.b):
        response = pair.chat(server, "after")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "revoked_api_key"
