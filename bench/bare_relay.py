"""The bare relay: the floor of the router's stack.

A minimal ASGI pass-through with no auth, no accounting and no database: it forwards the
request body to ``BENCH_UPSTREAM`` + ``/chat/completions`` through the router's own shared
HTTP client (``routing.vendors.http.client()``, so the same transport) and streams the raw
answer back. It watches the client like the router does, so a client that goes away closes
the upstream socket. Served by the same ASGI server as the router in each benchmark run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from typing import Any

import httpx

from routing.vendors import http as vendor_http

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9/v1").rstrip("/") + "/chat/completions"
PASSED_HEADERS = (b"content-type", b"content-length")
_HEADERS = {"content-type": "application/json"}


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await vendor_http.close_clients()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Any) -> bytes | None:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _watch(receive: Any, task: asyncio.Task[Any], gone: list[bool]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.append(True)
    task.cancel()


async def _relay(body: bytes, send: Any, kept: list[bytes] | None = None) -> int:
    """Relay ``body`` to the vendor and its answer to the client; return the vendor's status.

    ``kept`` collects the answer's bytes (the recorded relay reads the vendor's usage from them)."""
    # The URL parsed once, as the router does (routing.vendors.http.parsed_url).
    request = httpx.Request("POST", vendor_http.parsed_url(UPSTREAM), content=body, headers=_HEADERS)
    response = await vendor_http.client().send(request, stream=True)
    try:
        headers = [(k, v) for k, v in response.headers.raw if k.lower() in PASSED_HEADERS]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        async for part in response.aiter_raw():
            if not part:
                continue  # an empty body message would end a chunked response early
            await send({"type": "http.response.body", "body": part, "more_body": True})
            if kept is not None:
                kept.append(part)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await response.aclose()
    return response.status_code


async def handled_aside(scope: dict[str, Any], receive: Any, send: Any) -> bool:
    """Serve lifespan events and ``/healthz``; return True when ``scope`` was one of them or not HTTP."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return True
    if scope["type"] != "http":
        return True
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return True
    return False


async def watched(receive: Any, relay: Awaitable[int]) -> int | None:
    """Await ``relay`` while watching the client, as the router does: a client that goes away
    cancels it (closing the upstream socket). Return its result, or None when the client left."""
    task = asyncio.current_task()
    assert task is not None
    gone: list[bool] = []
    watcher = asyncio.create_task(_watch(receive, task, gone))
    try:
        return await relay
    except asyncio.CancelledError:
        if not gone or task.uncancel():
            raise
        return None
    finally:
        watcher.cancel()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if await handled_aside(scope, receive, send):
        return
    body = await _read_body(receive)
    if body is None:
        return
    await watched(receive, _relay(body, send))
