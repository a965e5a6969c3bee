"""One Redis client for the whole process: one pool, one timeout, one failure policy per feature.

Every use of Redis (rate limits, stream slots, cooldowns, readiness) calls ``RedisClient.call``
with the name of its feature. A failure (refused connection, timeout, a Redis error) is logged
with the exception's class name (never the URL, which may hold a password), reported to
``on_failure`` (the Prometheus counter), and then handled as the feature's policy says:

- ``closed``: raise ``RedisUnavailable`` (the feature is a limit: refuse rather than let it lapse);
- ``open``: return the caller's fallback (the feature is advice or upkeep: carry on without it).

A call waits at most about twice the timeout (connect, then answer), so a Redis outage costs
a request a bounded delay: a timeout is never retried; a broken connection is retried once,
at once, on a new one (after Redis restarts, every pooled connection is broken). An asyncio connection belongs to the event loop that
opened it, so the pool is per event loop: a server process has one loop, hence one pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar

logger = logging.getLogger("siraya.redis")

T = TypeVar("T")


class Policy(StrEnum):
    CLOSED = "closed"
    OPEN = "open"


class RedisUnavailable(Exception):
    """Redis did not answer for ``feature``, whose policy is to fail closed."""

    def __init__(self, feature: str, reason: str) -> None:
        super().__init__(f"redis unavailable for {feature}: {reason}")
        self.feature = feature
        self.reason = reason  # the exception's class name


FailureHook = Callable[[str, Policy], None]


def _ignore(feature: str, policy: Policy) -> None:
    return None


class LuaScript:
    """A Lua script run by its SHA (EVALSHA), loaded with EVAL the first time a server lacks it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, connection: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return await connection.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await connection.eval(self.source, len(keys), *keys, *args)


class RedisClient:
    def __init__(
        self, url: str, timeout: float, policies: Mapping[str, Policy], on_failure: FailureHook = _ignore
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.policies = dict(policies)
        self.on_failure = on_failure
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def connection(self) -> Any:
        """Return the running event loop's client (a pool of connections)."""
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        loop = asyncio.get_running_loop()
        found = self._pools.get(loop)
        if found is None:
            found = self._pools[loop] = Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                # One immediate retry, on a broken connection only (a pooled connection that Redis
                # closed when it restarted): never on a timeout, whose wait would double.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
        return found

    async def call(self, feature: str, operation: Callable[[Any], Awaitable[T]], fallback: T) -> T:
        """Run ``operation`` on this loop's client; on failure apply ``feature``'s policy.

        ``fallback`` is what an ``open`` feature gets instead of the answer; a ``closed``
        feature gets ``RedisUnavailable``.
        """
        from redis.exceptions import RedisError

        policy = self.policies[feature]
        try:
            async with asyncio.timeout(self.timeout * 2):
                return await operation(self.connection())
        except (RedisError, OSError, TimeoutError) as exc:
            reason = type(exc).__name__
        logger.warning(
            "redis unavailable for %s (%s): %s",
            feature,
            policy,
            reason,
            extra={"feature": feature, "policy": str(policy), "reason": reason},
        )
        self.on_failure(feature, policy)
        if policy is Policy.CLOSED:
            raise RedisUnavailable(feature, reason)
        return fallback
