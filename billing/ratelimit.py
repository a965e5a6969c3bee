"""Per-key rate limits: requests and tokens per minute over a sliding 60-second window.

Each limited key has one window per limit: a log of the requests admitted in the last 60
seconds with their weight (1 for requests; prompt + completion ceiling for tokens). A
request is let through only if it fits every window, and then it is entered in all of
them at once. Tokens are charged at the worst case when the request starts and corrected
to the billed prompt + completion tokens when it settles (``RateCharge.settle``).

Backends: in-process memory (one router process) by default; Redis when ``REDIS_URL`` is
set, so every process shares the window. The Redis backend runs each check-and-add as one
Lua script (atomic on the server, timed by the server's clock) through the process's client
(``billing.shared_redis``). If Redis cannot be reached the request is refused
(``LimiterUnavailable``, a 503 at the edge): the limiter fails closed, because a limit that silently stops
holding is worse than a clear error.
Keys without rate limits never touch the backend.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

from billing.counting import ask_counted
from billing.credit import Ask
from billing.errors import LimiterUnavailable, RateLimited
from billing.selectors import KeyInfo
from billing.shared_redis import RATE_CORRECTION, RATE_LIMIT, shared_redis
from billing.terms import ModelTerms
from lib.redisclient import LuaScript, RedisClient, RedisUnavailable

WINDOW_MS = 60_000
NEVER = -2  # retry value: the request is larger than the limit itself


@dataclass(frozen=True, slots=True)
class Window:
    name: str  # "requests" or "tokens"
    limit: int
    weight: int


@dataclass(frozen=True, slots=True)
class WindowState:
    name: str
    limit: int
    remaining: int
    reset_ms: int  # until the oldest entry leaves the window (room grows then)
    retry_ms: int | None = None  # refused: until this request would fit (NEVER: it cannot)


class Backend(Protocol):
    async def acquire(self, ident: str, member: str, windows: list[Window]) -> list[WindowState]: ...

    async def adjust(self, ident: str, member: str, name: str, weight: int) -> None: ...

    async def release(self, ident: str, member: str, names: list[str]) -> None: ...


# -- in-process memory -----------------------------------------------------------------------


@dataclass
class _Log:
    entries: OrderedDict[str, tuple[float, int]] = field(default_factory=OrderedDict)  # member -> (ms, weight)
    total: int = 0

    def expire(self, now: float) -> None:
        while self.entries:
            member, (at, weight) = next(iter(self.entries.items()))
            if at > now - WINDOW_MS:
                return
            del self.entries[member]
            self.total -= weight

    def reset_ms(self, now: float) -> int:
        if not self.entries:
            return WINDOW_MS
        at, _ = next(iter(self.entries.values()))
        return math.ceil(at + WINDOW_MS - now)

    def retry_ms(self, now: float, limit: int, weight: int) -> int:
        if weight > limit:
            return NEVER
        need, freed = self.total + weight - limit, 0
        for at, entry_weight in self.entries.values():
            freed += entry_weight
            if freed >= need:
                return math.ceil(at + WINDOW_MS - now)
        return WINDOW_MS


class MemoryBackend:
    """One process's windows. Every call runs on the event loop without awaiting: atomic."""

    def __init__(self) -> None:
        self.logs: dict[tuple[str, str], _Log] = {}

    def _now(self) -> float:
        return time.monotonic() * 1000

    async def acquire(self, ident: str, member: str, windows: list[Window]) -> list[WindowState]:
        now = self._now()
        logs = [self.logs.setdefault((ident, w.name), _Log()) for w in windows]
        for log in logs:
            log.expire(now)
        if any(log.total + w.weight > w.limit for log, w in zip(logs, windows, strict=True)):
            return [
                WindowState(
                    w.name,
                    w.limit,
                    max(w.limit - log.total, 0),
                    log.reset_ms(now),
                    log.retry_ms(now, w.limit, w.weight) if log.total + w.weight > w.limit else None,
                )
                for log, w in zip(logs, windows, strict=True)
            ]
        for log, w in zip(logs, windows, strict=True):
            log.entries[member] = (now, w.weight)
            log.total += w.weight
        if len(self.logs) > 100_000:
            self.logs = {k: v for k, v in self.logs.items() if v.entries}
        return [
            WindowState(w.name, w.limit, max(w.limit - log.total, 0), log.reset_ms(now))
            for log, w in zip(logs, windows, strict=True)
        ]

    async def adjust(self, ident: str, member: str, name: str, weight: int) -> None:
        log = self.logs.get((ident, name))
        if log is None or member not in log.entries:
            return  # already out of the window
        at, old = log.entries[member]
        log.entries[member] = (at, weight)
        log.total += weight - old

    async def release(self, ident: str, member: str, names: list[str]) -> None:
        for name in names:
            log = self.logs.get((ident, name))
            if log is not None and member in log.entries:
                _, weight = log.entries.pop(member)
                log.total -= weight


# -- Redis -------------------------------------------------------------------------------------

# KEYS: per window a sorted set (member -> admitted at, ms) and a hash (member -> weight,
# plus "_total"). ARGV: window ms, member, then per window its limit and this request's weight.
# Returns: allowed (1/0), then per window: limit, remaining, reset ms, retry ms (-1: not refused).
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local member = ARGV[2]
local n = #KEYS / 2

local function expire(z, h)
  while true do
    local old = redis.call('ZRANGEBYSCORE', z, '-inf', now - window, 'LIMIT', 0, 500)
    if #old == 0 then break end
    local ws = redis.call('HMGET', h, unpack(old))
    local freed = 0
    for j = 1, #ws do freed = freed + (tonumber(ws[j]) or 0) end
    redis.call('HDEL', h, unpack(old))
    redis.call('ZREM', z, unpack(old))
    redis.call('HINCRBY', h, '_total', -freed)
  end
  return tonumber(redis.call('HGET', h, '_total') or '0')
end

local function reset_ms(z)
  local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if #first == 0 then return window end
  return tonumber(first[2]) + window - now
end

local function retry_ms(z, h, total, weight, limit)
  if weight > limit then return -2 end
  local need, freed, start = total + weight - limit, 0, 0
  while true do
    local batch = redis.call('ZRANGE', z, start, start + 499, 'WITHSCORES')
    if #batch == 0 then return window end
    local members = {}
    for j = 1, #batch, 2 do members[#members + 1] = batch[j] end
    local ws = redis.call('HMGET', h, unpack(members))
    for j = 1, #members do
      freed = freed + (tonumber(ws[j]) or 0)
      if freed >= need then return tonumber(batch[2 * j]) + window - now end
    end
    start = start + 500
  end
end

local totals, allowed = {}, 1
for i = 1, n do
  totals[i] = expire(KEYS[2 * i - 1], KEYS[2 * i])
  if totals[i] + tonumber(ARGV[2 + 2 * i]) > tonumber(ARGV[1 + 2 * i]) then allowed = 0 end
end
local out = {allowed}
for i = 1, n do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  local limit, weight = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local retry = -1
  if allowed == 1 then
    redis.call('ZADD', z, now, member)
    redis.call('HSET', h, member, weight)
    totals[i] = redis.call('HINCRBY', h, '_total', weight)
    redis.call('PEXPIRE', z, window + 1000)
    redis.call('PEXPIRE', h, window + 1000)
  elseif totals[i] + weight > limit then
    retry = retry_ms(z, h, totals[i], weight, limit)
  end
  local remaining = limit - totals[i]
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = limit
  out[#out + 1] = remaining
  out[#out + 1] = reset_ms(z)
  out[#out + 1] = retry
end
return out
"""

# KEYS: the window's hash. ARGV: member, its billed weight. No-op once it left the window.
ADJUST_LUA = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], '_total', tonumber(ARGV[2]) - tonumber(old))
return 1
"""


# KEYS: per window its sorted set and hash. ARGV: member. Takes the member out of every window.
RELEASE_LUA = """
for i = 1, #KEYS / 2 do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  local old = redis.call('HGET', h, ARGV[1])
  if old then
    redis.call('HDEL', h, ARGV[1])
    redis.call('ZREM', z, ARGV[1])
    redis.call('HINCRBY', h, '_total', -tonumber(old))
  end
end
return 1
"""

_ACQUIRE, _ADJUST, _RELEASE = LuaScript(ACQUIRE_LUA), LuaScript(ADJUST_LUA), LuaScript(RELEASE_LUA)


class RedisBackend:
    """Windows in Redis, through the process's client (``billing.shared_redis``): entering a
    request fails closed (``RedisUnavailable``), correcting or releasing a charge fails open."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _keys(self, ident: str, name: str) -> list[str]:
        # One hash tag per key: every key a script touches lives in one Redis Cluster slot.
        base = f"{self.prefix}rl:{{{ident}}}:{name}"
        return [f"{base}:z", f"{base}:h"]

    async def acquire(self, ident: str, member: str, windows: list[Window]) -> list[WindowState]:
        keys = [k for w in windows for k in self._keys(ident, w.name)]
        args: list[Any] = [WINDOW_MS, member]
        for w in windows:
            args += [w.limit, w.weight]
        answer = await self.client.call(RATE_LIMIT, lambda r: _ACQUIRE(r, keys, args), None)
        out = [int(v) for v in answer]
        states = []
        for i, w in enumerate(windows):
            limit, remaining, reset, retry = out[1 + 4 * i : 5 + 4 * i]
            states.append(WindowState(w.name, limit, remaining, reset, None if retry == -1 else retry))
        return states

    async def adjust(self, ident: str, member: str, name: str, weight: int) -> None:
        keys = self._keys(ident, name)[1:]
        await self.client.call(RATE_CORRECTION, lambda r: _ADJUST(r, keys, [member, weight]), None)

    async def release(self, ident: str, member: str, names: list[str]) -> None:
        keys = [k for name in names for k in self._keys(ident, name)]
        await self.client.call(RATE_CORRECTION, lambda r: _RELEASE(r, keys, [member]), None)


_memory: dict[int, MemoryBackend] = {}  # per event loop, as a server process has one


def backend() -> Backend:
    client = shared_redis()
    if client is not None:
        return RedisBackend(client, settings.SIRAYA_REDIS_PREFIX)
    loop_id = id(asyncio.get_running_loop())
    found = _memory.get(loop_id)
    if found is None:
        found = _memory[loop_id] = MemoryBackend()
    return found


# -- what the relay calls ------------------------------------------------------------------------


def _seconds(ms: int) -> str:
    return str(max(math.ceil(ms / 1000), 0))


@dataclass
class RateCharge:
    """A request entered in its key's windows; ``settle`` corrects the tokens it was charged."""

    ident: str
    member: str
    states: list[WindowState]
    backend: Backend

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode(), v.encode()) for k, v in rate_headers(self.states).items()]

    async def settle(self, billed_tokens: int | None) -> None:
        if billed_tokens is None or not any(s.name == "tokens" for s in self.states):
            return
        await self.backend.adjust(self.ident, self.member, "tokens", billed_tokens)

    async def release(self) -> None:
        """Take the request out of its windows: the router failed it, the client used nothing."""
        await self.backend.release(self.ident, self.member, [s.name for s in self.states])


def rate_headers(states: list[WindowState], refused: WindowState | None = None) -> dict[str, str]:
    """``X-RateLimit-*`` for the refused window (else requests, else tokens), plus one set per window."""
    headers: dict[str, str] = {}
    main = refused or states[0]
    headers["X-RateLimit-Limit"] = str(main.limit)
    headers["X-RateLimit-Remaining"] = str(main.remaining)
    headers["X-RateLimit-Reset"] = _seconds(main.reset_ms)
    for state in states:
        suffix = state.name.capitalize()
        headers[f"X-RateLimit-Limit-{suffix}"] = str(state.limit)
        headers[f"X-RateLimit-Remaining-{suffix}"] = str(state.remaining)
        headers[f"X-RateLimit-Reset-{suffix}"] = _seconds(state.reset_ms)
    return headers


def rate_refusal(states: list[WindowState], weights: dict[str, int]) -> RateLimited:
    refused = next(s for s in states if s.retry_ms is not None)
    headers = rate_headers(states, refused)
    per = "requests per minute" if refused.name == "requests" else "tokens per minute"
    if refused.retry_ms == NEVER:
        message = (
            f"This request needs up to {weights['tokens']} tokens, more than this key's limit of "
            f"{refused.limit} {per}. Lower max_tokens or shorten the prompt."
        )
        return RateLimited(message, None, headers)
    retry = _seconds(refused.retry_ms or 0)
    message = f"Rate limit reached: this key may send {refused.limit} {per}. Retry in {retry} s."
    return RateLimited(message, int(retry), headers)


def key_ident(key: KeyInfo) -> str:
    # The display prefix makes a reused row id (e.g. SQLite after a flush) a different window.
    return f"{key.id}-{key.prefix}"


async def rate_limit_acquire(
    key: KeyInfo, terms: ModelTerms, ask: Ask, generation_id: str
) -> tuple[RateCharge | None, Ask]:
    """Enter the request in its key's windows or raise ``RateLimited``; return the charge and ``ask``.

    Raise ``LimiterUnavailable`` when the shared windows cannot be reached (the limiter fails closed).

    For a key with a tokens-per-minute limit the prompt is counted first (``ask_counted``:
    in the counting pool when it is long, unless the caller counted it already), and the
    returned ``ask`` carries the count so that admission does not count again.
    """
    windows: list[Window] = []
    weights: dict[str, int] = {}
    if key.requests_per_minute:
        windows.append(Window("requests", key.requests_per_minute, 1))
    if key.tokens_per_minute:
        ask = await ask_counted(key, terms, ask)
        assert ask.prompt_tokens is not None and ask.completion_ceiling is not None
        weight = ask.prompt_tokens + ask.completion_ceiling
        weights["tokens"] = weight
        windows.append(Window("tokens", key.tokens_per_minute, weight))
    if not windows:
        return None, ask
    chosen = backend()
    try:
        states = await chosen.acquire(key_ident(key), generation_id, windows)
    except RedisUnavailable as unavailable:  # fails closed
        raise LimiterUnavailable(unavailable.feature) from None
    if any(s.retry_ms is not None for s in states):
        raise rate_refusal(states, weights)
    return RateCharge(key_ident(key), generation_id, states, chosen), ask
