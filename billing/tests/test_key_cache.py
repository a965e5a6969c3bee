"""The in-process API key cache: bounded, least recently used out, misses remembered briefly."""

from __future__ import annotations

import secrets
import time

import pytest
from django.test import override_settings

from billing import keys, selectors
from billing.selectors import api_key_cached, api_key_load
from billing.services import api_key_create, api_key_revoke

SIZE = 50


@pytest.fixture(autouse=True)
def empty_cache():
    selectors._cache.clear()
    yield
    selectors._cache.clear()


def unknown_hash() -> str:
    return keys.hash_key("sk-siraya-" + secrets.token_hex(20))


def lookup(key_hash: str):
    """What the relay and the API views do: the cache first, the database on a miss."""
    hit, info = api_key_cached(key_hash)
    return info if hit else api_key_load(key_hash)


@override_settings(SIRAYA_KEY_CACHE_SIZE=SIZE, SIRAYA_KEY_CACHE_SECONDS=60, SIRAYA_KEY_CACHE_MISS_SECONDS=60)
def test_spraying_unknown_keys_neither_evicts_a_known_key_nor_grows_past_the_bound(db, django_assert_num_queries):
    api_key, plaintext = api_key_create("in use")
    known = keys.hash_key(plaintext)
    assert lookup(known).id == api_key.pk
    for _ in range(SIZE * 4):
        assert lookup(unknown_hash()) is None
    assert selectors._cache.sizes() == (1, SIZE)
    with django_assert_num_queries(0):
        assert lookup(known).id == api_key.pk


@override_settings(SIRAYA_KEY_CACHE_SECONDS=0, SIRAYA_KEY_CACHE_MISS_SECONDS=60)
def test_unknown_key_is_remembered_and_asked_again_no_query(db, client, django_assert_num_queries):
    headers = {"Authorization": "Bearer sk-siraya-" + secrets.token_hex(20)}
    with django_assert_num_queries(1):
        assert client.get("/v1/key", headers=headers).status_code == 401
    with django_assert_num_queries(0):
        response = client.get("/v1/key", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


@override_settings(SIRAYA_KEY_CACHE_SECONDS=60, SIRAYA_KEY_CACHE_MISS_SECONDS=0.2)
def test_a_remembered_miss_expires_after_its_short_ttl(db, django_assert_num_queries):
    missing = unknown_hash()
    assert lookup(missing) is None
    assert api_key_cached(missing) == (True, None)
    time.sleep(0.3)
    assert api_key_cached(missing) == (False, None)
    with django_assert_num_queries(1):
        assert lookup(missing) is None


@override_settings(SIRAYA_KEY_CACHE_SIZE=2, SIRAYA_KEY_CACHE_SECONDS=60)
def test_the_least_recently_used_known_key_is_evicted_first(db):
    hashes = [keys.hash_key(api_key_create(f"key {n}")[1]) for n in range(3)]
    lookup(hashes[0])
    lookup(hashes[1])
    lookup(hashes[0])  # used again: now the most recent
    lookup(hashes[2])
    assert api_key_cached(hashes[0])[0]
    assert not api_key_cached(hashes[1])[0]
    assert api_key_cached(hashes[2])[0]


@override_settings(SIRAYA_KEY_CACHE_SECONDS=60)
def test_a_revoked_key_is_refused_at_once_in_this_process(db):
    api_key, plaintext = api_key_create("revoked")
    known = keys.hash_key(plaintext)
    assert lookup(known).revoked is False
    api_key_revoke(api_key)
    assert lookup(known).revoked is True


def test_cache_off_remembers_nothing(db):
    with override_settings(SIRAYA_KEY_CACHE_SECONDS=0, SIRAYA_KEY_CACHE_MISS_SECONDS=0):
        lookup(unknown_hash())
        _, plaintext = api_key_create("uncached")
        lookup(keys.hash_key(plaintext))
    assert selectors._cache.sizes() == (0, 0)


@override_settings(SIRAYA_KEY_CACHE_SECONDS=60)
def test_requests_missing_the_cache_together_share_one_load(db, monkeypatch):
    """When a busy key's entry expires, the requests in flight wait for one load of it, not one
    each; one of them going away does not cancel the load the others wait for."""
    import asyncio

    from billing import ledger as ledger_module
    from billing import outage_admission
    from billing.errors import KeyRefused

    api_key, plaintext = api_key_create("busy")
    busy = api_key_load(keys.hash_key(plaintext))
    selectors._cache.clear()
    loads: list[str] = []
    release = asyncio.Event()

    async def key_loaded(key_hash: str):
        loads.append(key_hash)
        await release.wait()
        return None if key_hash == unknown else busy

    unknown_token = "sk-siraya-" + secrets.token_hex(20)
    unknown = keys.hash_key(unknown_token)
    monkeypatch.setattr(outage_admission, "key_loaded", key_loaded)
    ledger = ledger_module.Ledger()

    async def scenario():
        waiting = [asyncio.ensure_future(ledger.authenticate(f"Bearer {plaintext}")) for _ in range(20)]
        strangers = [asyncio.ensure_future(ledger.authenticate(f"Bearer {unknown_token}")) for _ in range(3)]
        await asyncio.sleep(0)
        waiting[0].cancel()
        await asyncio.sleep(0)
        release.set()
        found = await asyncio.gather(*waiting[1:])
        refused = await asyncio.gather(*strangers, return_exceptions=True)
        return found, refused, waiting[0].cancelled()

    found, refused, first_cancelled = asyncio.run(scenario())
    assert first_cancelled
    assert {info.id for info in found} == {api_key.pk}
    assert all(isinstance(r, KeyRefused) for r in refused)
    assert sorted(loads) == sorted([keys.hash_key(plaintext), unknown])  # one load per key
    assert not ledger._loading
