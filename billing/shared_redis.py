"""The process's Redis client (``REDIS_URL``, ``SIRAYA_REDIS_TIMEOUT``) and each feature's failure policy.

Every feature that uses Redis is named here with what happens when Redis does not answer
(see ``lib.redisclient``). Limits fail closed: a limit that silently stops holding is worse
than a clear 503, and the refused request is settled with nothing billed. Advice and
upkeep fail open: they are logged and counted (``siraya_redis_failures_total``), and the
request carries on.
"""

from __future__ import annotations

from django.conf import settings

from lib.redisclient import FailureHook, Policy, RedisClient

RATE_LIMIT = "rate_limit"  # enter a request in its key's windows
RATE_CORRECTION = "rate_limit_correction"  # correct or release a charge: it leaves the window within 60 s anyway
STREAM_SLOTS = "stream_slots"  # take one of a key's concurrent-stream slots
STREAM_SLOT_UPKEEP = "stream_slot_upkeep"  # refresh or free a slot: its expiry frees it anyway
COOLDOWNS = "cooldowns"  # skip deployments that keep failing: without them, routing tries them all
READINESS = "readiness"  # GET /readyz: Redis not answering means not ready

POLICIES: dict[str, Policy] = {
    RATE_LIMIT: Policy.CLOSED,
    RATE_CORRECTION: Policy.OPEN,
    STREAM_SLOTS: Policy.CLOSED,
    STREAM_SLOT_UPKEEP: Policy.OPEN,
    COOLDOWNS: Policy.OPEN,
    READINESS: Policy.CLOSED,
}

_failure_hooks: list[FailureHook] = []
_client: RedisClient | None = None


def redis_failure_hook_add(hook: FailureHook) -> None:
    """Have ``hook(feature, policy)`` called on every Redis failure (``ops`` counts them in its metrics)."""
    if hook not in _failure_hooks:
        _failure_hooks.append(hook)


def _failed(feature: str, policy: Policy) -> None:
    for hook in _failure_hooks:
        hook(feature, policy)


def shared_redis() -> RedisClient | None:
    """Return the process's Redis client, created on first use; None when ``REDIS_URL`` is unset."""
    global _client
    url, timeout = settings.REDIS_URL, settings.SIRAYA_REDIS_TIMEOUT
    if not url:
        return None
    if _client is None or (_client.url, _client.timeout) != (url, timeout):  # settings changed: tests only
        _client = RedisClient(url, timeout, POLICIES, _failed)
    return _client
