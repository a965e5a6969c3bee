"""Operations endpoints: readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from billing import outage
from billing.pending import pending
from billing.shared_redis import READINESS, shared_redis
from lib import metrics
from lib.redisclient import RedisClient, RedisUnavailable

logger = logging.getLogger("siraya.ops")


def _database_ok() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        # The class name only: driver messages can name hosts and users.
        logger.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return f"unreachable ({type(exc).__name__})"
    finally:
        # This runs in a worker thread of its own (``_database_within_bound``): its connection
        # would outlive the probe (one per probe, until the server's limit).
        connection.close()
    return "ok"


async def _redis_ok(client: RedisClient) -> str:
    # The process's client (its pool and timeout), as the limits use it; it logs and counts a failure.
    try:
        await client.call(READINESS, lambda r: r.ping(), None)
    except RedisUnavailable as exc:
        return f"unreachable ({exc.reason})"
    return "ok"


async def readyz(request: HttpRequest) -> JsonResponse:
    """``GET /readyz``: 200 when the database (and Redis, when configured) answer; 503 otherwise."""
    checks = {"database": await _database_within_bound()}
    client = shared_redis()
    if client is not None:
        checks["redis"] = await _redis_ok(client)
    ready = all(value == "ok" for value in checks.values())
    depth = pending.depth()
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": checks,
        # Writes kept through a database outage, not yet written (billing.pending).
        "pending_writes": {
            "memory": depth.memory,
            "journal": depth.journal,
            "oldest_seconds": round(depth.oldest_seconds, 3),
        },
    }
    return JsonResponse(body, status=200 if ready else 503)


async def _database_within_bound() -> str:
    """The database check, answered within the outage bound (a database that hangs is down)."""
    try:
        async with asyncio.timeout(outage.bound_seconds()):
            # Not in the thread the request's other sync code shares: the probe closes what it opened.
            return await sync_to_async(_database_ok, thread_sensitive=False)()
    except TimeoutError:
        return "unreachable (timeout)"


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: Prometheus text format, when ``SIRAYA_METRICS_ENABLED`` (and the bearer token, if set)."""
    if not settings.SIRAYA_METRICS_ENABLED:
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    token = settings.SIRAYA_METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), f"Bearer {token}".encode()):
            return HttpResponse("Unauthorized.\n", status=401, content_type="text/plain")
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)
