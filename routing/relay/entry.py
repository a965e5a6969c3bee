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
from routing.relay import lifecycle, wire
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


async def _method_not_allowed(send: Send) -> None:
    error = RouterError(405, "Use POST for /v1/chat/completions.", code="method_not_allowed")
    await send(wire.start(405, [*wire.error_response_headers(error, None), (b"allow", b"POST")]))
    await send(wire.body(error.json()))


async def _http(django_app: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one HTTP request; count it and write its access log line (with its generation id)."""
    started = time.monotonic()
    status = 0
    logs.generation_id.set(None)
    try:
        if scope["path"] in CHAT_PATHS and scope["method"] == "POST":
            # The relay gets the server's own send (no wrapper per chunk) and keeps its status.
            relay = Relay(scope, receive, send)
            try:
                await relay.run()
            finally:
                status = relay.status
        else:
            observed = StatusSend(send)
            try:
                if scope["path"] in CHAT_PATHS:
                    await _method_not_allowed(observed)
                else:
                    await django_app(scope, receive, observed)
            finally:
                status = observed.status
    finally:
        metrics.request_answered(scope["path"], status or 499)
        if access_logger.isEnabledFor(logging.INFO):
            _access_log(scope, status, started)


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
                await _http(django_app, scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        else:
            await django_app(scope, receive, send)

    return application
