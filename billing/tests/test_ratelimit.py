"""The rate-limit backends agree: a sliding 60 s window per limit, all-or-nothing across limits."""

from __future__ import annotations

import asyncio

import pytest

from billing.ratelimit import NEVER, WINDOW_MS, MemoryBackend, RedisBackend, Window
from billing.shared_redis import POLICIES
from lib.redisclient import RedisClient

from .external import redis_prefix, redis_url


@pytest.fixture(params=["memory", "redis"])
def make_backend(request):
    if request.param == "memory":
        return MemoryBackend
    url = redis_url()
    return lambda: RedisBackend(RedisClient(url, 1.0, POLICIES), redis_prefix())


def run(coro):
    return asyncio.run(coro)


def test_requests_window_admits_up_to_the_limit(make_backend):
    async def scenario():
        backend = make_backend()
        results = [await backend.acquire("k", f"gen-{i}", [Window("requests", 3, 1)]) for i in range(4)]
        return [(s[0].remaining, s[0].retry_ms) for s in results]

    outcome = run(scenario())
    assert [r[0] for r in outcome] == [2, 1, 0, 0]
    assert outcome[:3] == [(2, None), (1, None), (0, None)]
    assert 0 < outcome[3][1] <= WINDOW_MS


def test_a_request_refused_by_one_limit_is_charged_to_none(make_backend):
    async def scenario():
        backend = make_backend()
        both = [Window("requests", 10, 1), Window("tokens", 100, 80)]
        first = await backend.acquire("k", "a", both)
        second = await backend.acquire("k", "b", both)  # 160 tokens > 100: refused
        third = await backend.acquire("k", "c", [Window("requests", 10, 1), Window("tokens", 100, 20)])
        return first, second, third

    first, second, third = run(scenario())
    assert [s.remaining for s in first] == [9, 20]
    assert second[0].retry_ms is None and second[1].retry_ms is not None
    assert [s.remaining for s in third] == [8, 0]  # the refused request took no request slot


def test_settled_tokens_correct_the_charge(make_backend):
    async def scenario():
        backend = make_backend()
        await backend.acquire("k", "a", [Window("tokens", 100, 90)])
        await backend.adjust("k", "a", "tokens", 30)
        return await backend.acquire("k", "b", [Window("tokens", 100, 70)])

    (state,) = run(scenario())
    assert (state.remaining, state.retry_ms) == (0, None)


def test_request_larger_than_the_limit_can_never_fit(make_backend):
    async def scenario():
        return await make_backend().acquire("k", "a", [Window("tokens", 100, 101)])

    (state,) = run(scenario())
    assert state.retry_ms == NEVER


def test_keys_do_not_share_windows(make_backend):
    async def scenario():
        backend = make_backend()
        await backend.acquire("k1", "a", [Window("requests", 1, 1)])
        return await backend.acquire("k2", "b", [Window("requests", 1, 1)])

    (state,) = run(scenario())
    assert state.retry_ms is None


def test_released_request_leaves_every_window(make_backend):
    async def scenario():
        backend = make_backend()
        both = [Window("requests", 2, 1), Window("tokens", 100, 60)]
        await backend.acquire("k", "a", both)
        await backend.release("k", "a", ["requests", "tokens"])
        await backend.release("k", "a", ["requests", "tokens"])  # twice changes nothing
        return await backend.acquire("k", "b", both)

    requests, tokens = run(scenario())
    assert (requests.remaining, tokens.remaining) == (1, 40)
