"""The cap on concurrent streams per API key (``ApiKey.max_concurrent_streams``).

In-process counts by default (one router process). With ``REDIS_URL`` set, the count is
shared by every process: each open stream is a member of a Redis sorted set per key,
scored with its expiry time. Acquiring is one Lua script (drop expired members, count,
add if under the cap), so two processes never both take the last slot. The expiry is a
safety net for a process that dies holding slots; a live stream refreshes its slot well
before it expires. The relay releases its slot in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Any

from django.conf import settings

from routing.errors import RouterError

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

_redis_clients: dict[int, Any] = {}


def _redis() -> Any:
    """One asyncio Redis client per event loop."""
    import redis.asyncio

    loop_id = id(asyncio.get_running_loop())
    client = _redis_clients.get(loop_id)
    if client is None:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2)
        _redis_clients[loop_id] = client
    return client


def streams_exceeded(limit: int) -> RouterError:
    return RouterError(
        429,
        f"This API key already has {limit} concurrent stream{'s' if limit != 1 else ''} open, its limit. "
        "Wait for one to finish.",
        code="concurrent_streams_exceeded",
        type="rate_limit_error",
    )


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
        if not settings.REDIS_URL:
            if _local.get(self.key_id, 0) >= self.limit:
                raise streams_exceeded(self.limit)
            _local[self.key_id] = _local.get(self.key_id, 0) + 1
            return
        ttl = settings.SIRAYA_STREAM_SLOT_TTL
        taken = await _redis().eval(_ACQUIRE, 1, self.redis_key, time.time(), self.limit, ttl, self.member)
        if not taken:
            raise streams_exceeded(self.limit)
        self._refresher = asyncio.create_task(self._refresh(ttl))

    async def _refresh(self, ttl: float) -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            with contextlib.suppress(Exception):
                await _redis().eval(_REFRESH, 1, self.redis_key, time.time(), ttl, self.member)

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        if not settings.REDIS_URL:
            left = _local.get(self.key_id, 1) - 1
            if left > 0:
                _local[self.key_id] = left
            else:
                _local.pop(self.key_id, None)
            return
        if self._refresher is not None:
            self._refresher.cancel()
        # If Redis is unreachable now, the slot's expiry frees it.
        with contextlib.suppress(Exception):
            await _redis().zrem(self.redis_key, self.member)


async def stream_slot_acquire(key_id: int, limit: int | None) -> StreamSlot | None:
    """Take one of the key's stream slots, or raise 429 ``concurrent_streams_exceeded``; None when uncapped."""
    if limit is None:
        return None
    slot = StreamSlot(key_id, limit)
    await slot.acquire()
    return slot
