"""Credit and rate limits through live router processes (several, racing), or in process where one suffices."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.db.models import Sum

from billing.models import ApiKey, KeyUsageDay, RouterInstance, UsageRecord, UsageStatus
from billing.services import api_key_create
from billing.settlement import Outcome
from billing.tests.admitting import settle as settle_record
from conftest import database_url, make_cast
from fakevendors.openai import PROMPT_TOKENS
from lib import tokens
from routing.models import RouterModel
from routing.tests.inprocess import Exchange
from routing.tests.sse_client import RawStream

from .external import closed_port, redis_prefix, redis_url

# Counted locally at no fewer tokens than the fake vendor reports (17), so a request's real
# cost never exceeds its hold; the limit then must hold exactly.
MESSAGES = [
    {"role": "user", "content": "Please count the words in this sentence and answer briefly, thank you very much."}
]


def fire(targets: list[tuple[str, str]], body: dict, timeout: float = 60) -> list[httpx.Response]:
    """Send one request per (url, key) all at once; return the responses in order."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(targets) + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            calls = [
                client.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
                for url, key in targets
            ]
            return await asyncio.gather(*calls)

    return asyncio.run(run())


def wait_all_settled(api_key: ApiKey, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while UsageRecord.objects.filter(api_key=api_key, status=UsageStatus.IN_PROGRESS).exists():
        assert time.monotonic() < deadline, "requests still in progress"
        time.sleep(0.05)


@pytest.mark.slow
def test_hundred_simultaneous_requests_never_spend_above_the_limit(cast, fake_openai, server_factory):
    assert tokens.count_messages(MESSAGES, "cl100k_base") >= PROMPT_TOKENS
    fake_openai.scenario.tokens = 5
    fake_openai.scenario.token_delay = 0.02
    RouterModel.objects.filter(name=cast.model).update(request_price=Decimal("0.001"))
    limit = Decimal("0.008")  # about seven worst cases of $0.00105
    api_key, key = api_key_create("budget", credit_limit=limit)
    other = server_factory()  # a second process: admissions race across processes, not only threads
    targets = [(cast.url if i % 2 else other.url, key) for i in range(100)]
    body = {"model": cast.model, "messages": MESSAGES, "max_tokens": 5}
    responses = fire(targets, body)
    statuses = [r.status_code for r in responses]
    wait_all_settled(api_key)
    assert set(statuses) <= {200, 402}, statuses
    accepted, refused = statuses.count(200), statuses.count(402)
    assert accepted >= 7 and refused > 0
    error = next(r for r in responses if r.status_code == 402).json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "credit_limit_exceeded")
    assert "limit remains" in error["message"]
    records = UsageRecord.objects.filter(api_key=api_key)
    assert records.count() == 100
    assert records.filter(status="completed").count() == accepted
    assert records.filter(status="error", http_status=402).count() == refused
    billed = records.aggregate(total=Sum("cost"))["total"]
    assert billed == accepted * (Decimal("0.001") + Decimal(PROMPT_TOKENS + 5 * 2) / 1_000_000)
    assert billed <= limit
    assert KeyUsageDay.objects.get(api_key=api_key).cost == billed
    assert not records.filter(reserved_cost__gt=0).exists()


def manage(*args: str) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "siraya_site.settings", "DATABASE_URL": database_url()}
    done = subprocess.run([sys.executable, "manage.py", *args], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_key_created_with_rpm_is_limited_end_to_end(relay_openai, fake_openai):
    cast = relay_openai  # the router in process, its requests in turn on one event loop
    key = manage("key", "create", "limited", "--rpm", "3", "--limit", "5", "--limit-reset", "weekly")
    api_key = ApiKey.objects.get(name="limited")
    assert (api_key.requests_per_minute, api_key.credit_limit, api_key.limit_reset) == (3, Decimal(5), "weekly")
    seen = []
    for _ in range(3):
        response = cast.chat(messages=MESSAGES, key=key)
        assert response.status_code == 200
        seen.append(response.headers["x-ratelimit-remaining"])
        assert response.headers["x-ratelimit-limit"] == "3"
        assert 0 < int(response.headers["x-ratelimit-reset"]) <= 60
    assert seen == ["2", "1", "0"]
    refused = cast.chat(messages=MESSAGES, stream=True, key=key)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert (refused.headers["x-ratelimit-limit"], refused.headers["x-ratelimit-remaining"]) == ("3", "0")
    assert 0 < int(refused.headers["x-ratelimit-reset"]) <= 60
    # Refused before admission: one error record (every authenticated request has one), no cost, no hold.
    refusal = UsageRecord.objects.get(generation_id=refused.headers["x-generation-id"])
    assert (refusal.status, refusal.http_status, refusal.error_code) == ("error", 429, "rate_limit_exceeded")
    assert (refusal.cost, refusal.reserved_cost) == (Decimal(0), Decimal(0))
    assert UsageRecord.objects.filter(api_key=api_key).count() == 4


def chat(url: str, key: str, **body) -> httpx.Response:
    body = {"model": "test/fake", "messages": MESSAGES, **body}
    return httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_tokens_per_minute_charge_worst_case_then_billed_tokens(relay_openai, fake_openai):
    """In process: the charge is corrected before the request's ASGI call returns."""
    cast = relay_openai

    def chat(_: str, key: str, **body: Any) -> Exchange:
        return cast.chat(messages=MESSAGES, key=key, **body)

    fake_openai.scenario.tokens = 5
    prompt = tokens.count_messages(MESSAGES, "cl100k_base")
    _, key = api_key_create("tpm", tokens_per_minute=2 * prompt + 100)
    first = chat(cast.model, key, max_tokens=60)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == str(2 * prompt + 100)
    assert first.headers["x-ratelimit-remaining-tokens"] == str(prompt + 40)
    cast.record(first.headers["x-generation-id"])
    # Without the correction to the billed 17 + 5 tokens, this one would not fit.
    second = chat(cast.model, key, max_tokens=60)
    assert second.status_code == 200, second.text
    assert second.headers["x-ratelimit-remaining-tokens"] == str(2 * prompt + 100 - (PROMPT_TOKENS + 5) - prompt - 60)
    cast.record(second.headers["x-generation-id"])
    third = chat(cast.model, key, max_tokens=prompt + 100 - 2 * (PROMPT_TOKENS + 5) + 1)
    assert third.status_code == 429
    assert third.headers["x-ratelimit-remaining"] == str(2 * prompt + 100 - 2 * (PROMPT_TOKENS + 5))
    huge = chat(cast.model, key, max_tokens=10_000)
    assert huge.status_code == 429
    assert huge.json()["error"]["code"] == "request_exceeds_rate_limit"
    assert "retry-after" not in huge.headers


@pytest.mark.slow
def test_two_processes_share_one_rate_limit_through_redis(server_factory, fake_openai, transactional_db):
    env = {"REDIS_URL": redis_url(), "SIRAYA_REDIS_PREFIX": redis_prefix()}
    first, second = server_factory(env), server_factory(env)
    make_cast(first.url, fake_openai.url + "/v1")
    api_key, key = api_key_create("shared", requests_per_minute=10)
    for expected in ("9", "8", "7", "6"):
        assert chat(first.url, key).headers["x-ratelimit-remaining"] == expected
    assert chat(second.url, key).headers["x-ratelimit-remaining"] == "5"  # the other process counts on
    responses = fire(
        [(first.url if i % 2 else second.url, key) for i in range(20)], {"model": "test/fake", "messages": MESSAGES}
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 5 and statuses.count(429) == 15, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["x-ratelimit-remaining"] == "0" and int(refused.headers["retry-after"]) >= 1
    wait_all_settled(api_key)
    assert UsageRecord.objects.filter(api_key=api_key, status="completed").count() == 10


@pytest.mark.slow
def test_redis_outage_refuses_rate_limited_keys_clearly(server_factory, fake_openai, transactional_db):
    server = server_factory({"REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0", "SIRAYA_REDIS_TIMEOUT": "0.3"})
    make_cast(server.url, fake_openai.url + "/v1")
    _, limited = api_key_create("limited", requests_per_minute=100)
    _, unlimited = api_key_create("unlimited")
    started = time.monotonic()
    refused = chat(server.url, limited)
    assert time.monotonic() - started < 5
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "rate_limiter_unavailable"
    assert "redis://" not in refused.text
    assert chat(server.url, unlimited).status_code == 200  # keys without rate limits never touch Redis


@pytest.mark.slow
def test_hold_of_a_killed_process_expires(server_factory, fake_openai, cast):
    """A router killed mid-stream leaves an in-progress record; its hold stops counting after the expiry."""
    fake_openai.scenario.tokens = 200
    fake_openai.scenario.token_delay = 0.05
    api_key, key = api_key_create("one-at-a-time", credit_limit=Decimal("0.0003"))  # one worst case of 0.0002x
    doomed = server_factory({"SIRAYA_RESERVATION_SECONDS": "3"})
    body = {"model": cast.model, "messages": MESSAGES, "stream": True, "max_tokens": 100}
    stream = RawStream(doomed.url, key, body)
    assert stream.next_data() is not None  # streaming: the hold is in place
    held_at = time.monotonic()
    # The hold must expire by itself, whether or not anyone can tell the process is dead. On
    # this machine every live router's heartbeat would see the dead pid at once and settle the
    # record, which releases the hold: the process is made to look like one on another
    # machine, whose silence counts only after SIRAYA_INSTANCE_STALE_SECONDS (30 s).
    assert RouterInstance.objects.filter(pid=doomed.process.pid).update(hostname="another-machine") == 1
    doomed.stop(signal.SIGKILL)
    record = UsageRecord.objects.get(api_key=api_key)
    assert record.status == "in_progress" and record.reserved_cost > 0
    blocked = chat(cast.url, key, max_tokens=100)
    assert blocked.status_code == 402
    while time.monotonic() - held_at < 3.5:
        time.sleep(0.1)
    assert chat(cast.url, key, max_tokens=100).status_code == 200
    # What the reliability sweep does with the dead record: settle it as interrupted.
    settle_record(record.pk, Outcome(status=UsageStatus.INTERRUPTED, messages=MESSAGES))
    record.refresh_from_db()
    assert (record.status, record.reserved_cost) == ("interrupted", 0)


def test_key_endpoint_answers_spent_and_left(relay_openai, fake_openai):
    cast = relay_openai  # in process: the relay and Django's /v1/key alike
    fake_openai.scenario.tokens = 4
    api_key, key = api_key_create("me", credit_limit=Decimal("2"), limit_reset="monthly", requests_per_minute=50)
    response = cast.chat(messages=MESSAGES, key=key)
    cast.record(response.headers["x-generation-id"])
    record = UsageRecord.objects.get(api_key=api_key)
    answer = cast.exchange(path="/v1/key", method="GET", key=key)
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert (data["name"], data["prefix"], data["limit_reset"], data["currency"]) == (
        "me",
        api_key.prefix,
        "monthly",
        "USD",
    )
    assert data["credit_limit"] == "2.00000000"
    assert Decimal(data["spend"]) == record.cost > 0
    assert Decimal(data["remaining"]) == Decimal(2) - record.cost
    assert data["reserved"] == "0.00000000"
    assert data["rate_limits"] == {"requests_per_minute": 50, "tokens_per_minute": None}
    assert data["period"]["start"].endswith("-01T00:00:00Z") and data["period"]["resets_at"].endswith("-01T00:00:00Z")
    for period in ("today", "this_week", "this_month"):
        totals = data["usage"][period]
        assert (totals["requests"], totals["prompt_tokens"], totals["completion_tokens"]) == (1, PROMPT_TOKENS, 4)
        assert totals["total_tokens"] == PROMPT_TOKENS + 4 and Decimal(totals["cost"]) == record.cost
    assert key not in answer.text
    anonymous = cast.exchange(path="/v1/key", method="GET", key="")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "missing_api_key"
