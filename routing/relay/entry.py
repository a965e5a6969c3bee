"""The ASGI application: each client API's path goes straight to the relay in its dialect, the rest to Django."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import nullcontext
from typing import Any

import orjson
from django.conf import settings

from lib import logs, metrics, tracing
from routing.dialects.base import ClientApi, Dialect
from routing.dialects.chat.dialect import ChatCompletions
from routing.dialects.embeddings.dialect import Embeddings
from routing.dialects.messages.dialect import Messages
from routing.dialects.responses.dialect import Responses
from routing.errors import RouterError
from routing.relay import edge, lifecycle, traces
from routing.relay.channel import JSON_HEADERS, ClientChannel, Receive, Scope, Send, error_headers
from routing.relay.embeddings import serve_embeddings
from routing.relay.flow import StatusSend
from routing.relay.request import Serve, serve_request, serve_traced
from routing.vendors import http

# Each chat client API's path and the dialect that speaks it.
APIS: dict[str, Dialect] = {
    "/v1/chat/completions": ChatCompletions(),
    "/v1/messages": Messages(),
    "/v1/responses": Responses(),
}
_EMBEDDINGS = Embeddings()
# Every client API's path: its API, and what serves a request to it.
SERVED: dict[str, tuple[ClientApi, Serve]] = {
    **{route: (dialect, serve_request) for route, dialect in APIS.items()},
    "/v1/embeddings": (_EMBEDDINGS, serve_embeddings),
}
# The same, with and without a trailing slash.
DIALECTS: dict[str, tuple[ClientApi, Serve]] = {
    path: served for route, served in SERVED.items() for path in (route, route + "/")
}
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
            await asyncio.to_thread(tracing.shutdown)  # export the last spans
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _refuse(dialect: ClientApi, scope: Scope, send: Send, refusal: RouterError | None) -> None:
    """Answer a request the relay may not serve: ``refusal``, or 405 for a method other than POST."""
    if refusal is None:
        refusal = RouterError(405, f"Use POST for {scope['path'].rstrip('/')}.", code="method_not_allowed")
        headers = [*error_headers(refusal, None), (b"allow", b"POST")]
    else:
        headers = error_headers(refusal, None)
    with traces.refused_at_the_door(dialect, scope, refusal) if tracing.ENABLED else nullcontext():
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": dialect.error_body(refusal)})


async def serve_http(django_app: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one HTTP request; count it and write its access log line (with its generation id)."""
    started = time.monotonic()
    answering: ClientChannel | StatusSend | None = None
    logs.generation_id.set(None)
    try:
        served = DIALECTS.get(scope["path"])
        if served is None:
            answering = StatusSend(send)
            await _django(django_app, scope, receive, answering)
        elif (refusal := edge.transport_refusal(scope)) is not None or scope["method"] != "POST":
            # The relay's paths under the host and HTTPS rules Django applies to the others.
            answering = StatusSend(send)
            await _refuse(served[0], scope, answering, refusal)
        else:
            # The channel gets the server's own send (no wrapper per chunk) and keeps its status.
            answering = ClientChannel(scope, receive, send, edge.hsts_headers(scope))
            api, serve = served
            # Chosen here, not in a wrapper: a coroutine frame less for every open stream.
            if tracing.ENABLED:
                await serve_traced(api, serve, answering)
            else:
                await serve(api, answering)
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
    await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})


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
