"""The ASGI application: chat completions go straight to the relay, the rest to Django."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from django.conf import settings

from ops import logs, metrics
from routing.errors import RouterError
from routing.relay import edge, lifecycle, wire
from routing.relay.flow import StatusSend
from routing.relay.handler import Receive, Relay, Scope, Send
from routing.vendors import http

CHAT_PATHS = {"/v1/chat/completions", "/v1/chat/completions/"}
access_logger = logging.getLogger("siraya.access")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await lifecycle.ensure_started()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await lifecycle.stop()
            await http.close_clients()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _refuse_chat(send: Send, refusal: RouterError | None) -> None:
    """Answer a request the relay may not serve: ``refusal``, or 405 for a method other than POST."""
    if refusal is None:
        refusal = RouterError(405, "Use POST for /v1/chat/completions.", code="method_not_allowed")
        headers = [*wire.error_response_headers(refusal, None), (b"allow", b"POST")]
    else:
        headers = wire.error_response_headers(refusal, None)
    await send(wire.start(refusal.status, headers))
    await send(wire.body(refusal.json()))


async def serve_http(django_app: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one HTTP request; count it and write its access log line (with its generation id)."""
    started = time.monotonic()
    answering: Relay | StatusSend | None = None
    logs.generation_id.set(None)
    try:
        if scope["path"] not in CHAT_PATHS:
            answering = StatusSend(send)
            await _django(django_app, scope, receive, answering)
        elif (refusal := edge.transport_refusal(scope)) is not None or scope["method"] != "POST":
            # The relay's path under the host and HTTPS rules Django applies to the others.
            answering = StatusSend(send)
            await _refuse_chat(answering, refusal)
        else:
            # The relay gets the server's own send (no wrapper per chunk) and keeps its status.
            answering = Relay(scope, receive, send, edge.hsts_headers(scope))
            await answering.run()
    finally:
        status = 0 if answering is None else answering.status
        metrics.request_answered(scope["path"], status or 499)
        if access_logger.isEnabledFor(logging.INFO):
            _access_log(scope, status, started)


async def _django(django_app: Any, scope: Scope, receive: Receive, send: StatusSend) -> None:
    """Django's paths, their request body capped and given a deadline before Django spools it."""
    limit = edge.body_limit(scope["path"])
    if edge.declared_length(scope) > limit:
        await edge.refuse(send, scope["path"], edge.too_large(limit))
        return
    guarded = edge.BodyGuard(receive, limit, settings.SIRAYA_BODY_READ_SECONDS)
    await django_app(scope, guarded, send)
    if guarded.refusal is not None and not send.status:
        await edge.refuse(send, scope["path"], guarded.refusal)


def _access_log(scope: Scope, status: int, started: float) -> None:
    access_logger.info(
        "%s %s %s",
        scope["method"],
        scope["path"][:200],
        status or "-",
        extra={
            "method": scope["method"],
            "path": scope["path"][:200],
            "status": status or None,
            "duration_ms": int((time.monotonic() - started) * 1000),
            "client": (scope.get("client") or ("", 0))[0],
        },
    )


async def _debug_tasks(send: Send) -> None:
    """Test-only: how many asyncio tasks, running requests and idle pooled vendor connections
    this process holds (leak checks)."""
    body = orjson.dumps(
        {
            "tasks": len(asyncio.all_tasks()),
            "running": lifecycle.running(),
            "upstream_idle": http.idle_upstream_connections(),
        }
    )
    await send(wire.start(200, wire.JSON_HEADERS))
    await send(wire.body(body))


def router_application(django_app: Any) -> Any:
    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await lifecycle.ensure_started()  # daphne sends no lifespan events
            if scope["path"] == "/debug/tasks" and settings.SIRAYA_DEBUG_ENDPOINTS:
                await _debug_tasks(send)
            else:
                await serve_http(django_app, scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        else:
            await django_app(scope, receive, send)

    return application
