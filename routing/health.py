"""Deployment cooldowns: a deployment that keeps failing is skipped for a while.

A deployment that failed ``SIRAYA_COOLDOWN_FAILURES`` times within
``SIRAYA_COOLDOWN_WINDOW_SECONDS`` is skipped for ``SIRAYA_COOLDOWN_SECONDS``; a vendor's
429 with ``Retry-After`` cools the deployment for that long at once. The state lives in
process memory, or in Redis when ``REDIS_URL`` is set so that every router process shares it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from django.conf import settings

from billing.shared_redis import COOLDOWNS, shared_redis
from lib.redisclient import LuaScript, RedisClient


class CooldownStore(Protocol):
    async def cooling(self, deployment_ids: Iterable[int]) -> set[int]: ...

    async def record_failure(self, deployment_id: int, retry_after: float | None) -> None: ...


class MemoryCooldowns:
    def __init__(self, failures: int, window: float, cooldown: float) -> None:
        self.failures, self.window, self.cooldown = failures, window, cooldown
        self._recent: dict[int, deque[float]] = {}
        self._until: dict[int, float] = {}

    async def cooling(self, deployment_ids: Iterable[int]) -> set[int]:
        if not self._until:
            return set()
        now = time.monotonic()
        return {d for d in deployment_ids if self._until.get(d, 0.0) > now}

    async def record_failure(self, deployment_id: int, retry_after: float | None) -> None:
        now = time.monotonic()
        if retry_after is not None:
            self._cool(deployment_id, now + retry_after)
            return
        recent = self._recent.setdefault(deployment_id, deque())
        recent.append(now)
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if len(recent) >= self.failures:
            recent.clear()
            self._cool(deployment_id, now + self.cooldown)

    def _cool(self, deployment_id: int, until: float) -> None:
        self._until[deployment_id] = max(until, self._until.get(deployment_id, 0.0))


# KEYS[1] failure counter, KEYS[2] cooldown flag; ARGV: failures, window ms, cooldown ms.
# Counting and cooling happen in one atomic step on the server.
_FAILURE_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if count >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
end
return count
"""
# Cool for at least ARGV[1] ms, never shortening a longer cooldown already set.
_COOL_SCRIPT = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 1
"""


_FAILURE, _COOL = LuaScript(_FAILURE_SCRIPT), LuaScript(_COOL_SCRIPT)


class RedisCooldowns:
    """Cooldowns shared through the process's Redis client. They are advice, not a limit: the
    feature fails open, so when Redis cannot be reached routing carries on as if nothing were
    cooling (logged and counted in ``siraya_redis_failures_total``)."""

    def __init__(self, client: RedisClient, prefix: str, failures: int, window: float, cooldown: float) -> None:
        self.client = client
        self.prefix = f"{prefix}cooldown:"
        self.failures, self.window, self.cooldown = failures, window, cooldown

    async def cooling(self, deployment_ids: Iterable[int]) -> set[int]:
        found = await self.cooling_known(deployment_ids)
        return set() if found is None else found

    async def cooling_known(self, deployment_ids: Iterable[int]) -> set[int] | None:
        """Like ``cooling``, but None when Redis cannot be reached (the reports say "unknown")."""
        ids = list(deployment_ids)
        if not ids:
            return set()
        flags = await self.client.call(COOLDOWNS, lambda r: r.mget([f"{self.prefix}on:{d}" for d in ids]), None)
        if flags is None:
            return None
        return {d for d, flag in zip(ids, flags, strict=True) if flag is not None}

    async def record_failure(self, deployment_id: int, retry_after: float | None) -> None:
        flag = f"{self.prefix}on:{deployment_id}"
        if retry_after is not None:
            args = [max(1, int(retry_after * 1000))]
            await self.client.call(COOLDOWNS, lambda r: _COOL(r, [flag], args), None)
            return
        keys = [f"{self.prefix}fail:{deployment_id}", flag]
        args = [self.failures, int(self.window * 1000), int(self.cooldown * 1000)]
        await self.client.call(COOLDOWNS, lambda r: _FAILURE(r, keys, args), None)


_stores: dict[str, CooldownStore] = {}


def cooldowns() -> CooldownStore:
    """Return this process's cooldown store (Redis-backed when ``REDIS_URL`` is set)."""
    import asyncio

    loop_key = str(id(asyncio.get_running_loop()))
    store = _stores.get(loop_key)
    if store is None:
        failures = settings.SIRAYA_COOLDOWN_FAILURES
        window = settings.SIRAYA_COOLDOWN_WINDOW_SECONDS
        cooldown = settings.SIRAYA_COOLDOWN_SECONDS
        client = shared_redis()
        if client is not None:
            store = RedisCooldowns(client, settings.SIRAYA_REDIS_PREFIX, failures, window, cooldown)
        else:
            store = MemoryCooldowns(failures, window, cooldown)
        _stores[loop_key] = store
    return store
