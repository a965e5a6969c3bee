"""The cap on concurrent streams per API key (``ApiKey.max_concurrent_streams``).

In-process counts by default (one router process). With ``REDIS_URL`` set, the count is
shared by every process: each open stream is a member of a Redis sorted set per key,
scored with its expiry time. Acquiring is one Lua script (drop expired members, count,
add if under the cap), so two processes never both take the last slot. The expiry is a
safety net for a process that dies holding slots; a live stream refreshes its slot well
before it expires. The relay releases its slot in ``finally``.

Redis calls go through the process's client (``billing.shared_redis``). Taking a slot fails
closed: when Redis does not answer, ``LimiterUnavailable`` reaches the ledger, which refuses the
stream (503 ``stream_limiter_unavailable`` at the edge) with nothing billed; a cap that lapses unseen
is no cap. Refreshing and freeing a slot fail open: the slot's expiry frees it.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time

from django.conf import settings

from billing.errors import LimiterUnavailable, StreamCapReached
from billing.shared_redis import STREAM_SLOT_UPKEEP, STREAM_SLOTS, shared_redis
from lib.redisclient import LuaScript, RedisClient, RedisUnavailable

_local: dict[int, int] = {}

_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return 1
"""
# XX: an expired (already removed) slot is not brought back.
_REFRESH = """
redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
return 1
"""

_ACQUIRE_SCRIPT, _REFRESH_SCRIPT = LuaScript(_ACQUIRE), LuaScript(_REFRESH)


class StreamSlot:
    """One held slot; ``release()`` is idempotent."""

    def __init__(self, key_id: int, limit: int) -> None:
        self.key_id = key_id
        self.limit = limit
        self.member = secrets.token_hex(8)
        self.released = False
        self._refresher: asyncio.Task[None] | None = None

    @property
    def redis_key(self) -> str:
        return f"{settings.SIRAYA_REDIS_PREFIX}streams:{self.key_id}"

    async def acquire(self) -> None:
        client = shared_redis()
        if client is None:
            if _local.get(self.key_id, 0) >= self.limit:
                raise StreamCapReached(self.limit)
            _local[self.key_id] = _local.get(self.key_id, 0) + 1
            return
        ttl = settings.SIRAYA_STREAM_SLOT_TTL
        keys, args = [self.redis_key], [time.time(), self.limit, ttl, self.member]
        try:
            taken = await client.call(STREAM_SLOTS, lambda r: _ACQUIRE_SCRIPT(r, keys, args), None)
        except RedisUnavailable as exc:
            if exc.reason == "TimeoutError":
                # The script may have run with its answer lost: free what it may have taken.
                await self._forget(client)
            raise LimiterUnavailable(exc.feature) from None  # fails closed: the stream is refused
        if not taken:
            raise StreamCapReached(self.limit)
        self._refresher = asyncio.create_task(self._refresh(client, ttl))

    async def _refresh(self, client: RedisClient, ttl: float) -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            refresh = functools.partial(_REFRESH_SCRIPT, keys=[self.redis_key], args=[time.time(), ttl, self.member])
            await client.call(STREAM_SLOT_UPKEEP, refresh, None)

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        client = shared_redis()
        if client is None:
            left = _local.get(self.key_id, 1) - 1
            if left > 0:
                _local[self.key_id] = left
            else:
                _local.pop(self.key_id, None)
            return
        if self._refresher is not None:
            self._refresher.cancel()
        await self._forget(client)

    async def _forget(self, client: RedisClient) -> None:
        # If Redis is unreachable now (fails open), the slot's expiry frees it.
        await client.call(STREAM_SLOT_UPKEEP, lambda r: r.zrem(self.redis_key, self.member), None)


async def stream_slot_acquire(key_id: int, limit: int | None) -> StreamSlot | None:
    """Take one of the key's stream slots, or raise ``StreamCapReached``; None when uncapped.

    Raise ``LimiterUnavailable`` when the shared count cannot be reached.
    """
    if limit is None:
        return None
    slot = StreamSlot(key_id, limit)
    await slot.acquire()
    return slot
