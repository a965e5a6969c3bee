"""Reach PostgreSQL or Redis for a test: skip when unreachable, fail if CI requires them."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def services_required() -> bool:
    return os.environ.get("SIRAYA_REQUIRE_SERVICES") == "1"


def unavailable(what: str) -> None:
    message = f"{what} is not reachable"
    if services_required():
        pytest.fail(f"{message}, and SIRAYA_REQUIRE_SERVICES=1 requires it")
    pytest.skip(message)


def redis_url() -> str:
    """Return a reachable Redis URL (REDIS_URL, else the loopback default)."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        client.close()
    except (redis.RedisError, OSError):
        unavailable(f"Redis at {REDIS_URL}")
    return REDIS_URL


def redis_prefix() -> str:
    """A key prefix no other test or run shares."""
    return f"siraya-test-{uuid.uuid4().hex[:12]}:"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
