"""The client's side of one request: read its body, watch its connection, send it the answer.

The channel is the one owner of the request's cancellation. The relay's work runs inside
``cancellable()``; the client disconnecting, the client not reading (the stall guard), and
the server shutting down (``lifecycle.drain``) all end it the same way, through ``cancel``
with a reason, and the block raises ``Interrupted(reason)`` (``routing.relay.flow``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from django.conf import settings

from lib import tracing
from routing.errors import RouterError
from routing.relay import edge, lifecycle
from routing.relay.flow import CancelScope, StallGuard

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]


def error_headers(error: RouterError, generation_id: str | None) -> Headers:
    """The headers of an error answered before any of the answer (``Retry-After`` where it applies)."""
    headers = list(JSON_HEADERS)
    if generation_id:
        headers.append((b"x-generation-id", generation_id.encode()))
    headers.extend((k.lower().encode(), v.encode()) for k, v in error.headers.items())
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None and "retry-after" not in {k.lower() for k in error.headers}:
        headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
    return headers


class ClientGone(Exception):
    """The client disconnected while the request body was being read."""


class ClientChannel:
    # One per open stream: slots keep each a few hundred bytes smaller than a __dict__ would.
    __slots__ = (
        "_cancel", "_send", "_stream_headers", "_watcher", "disconnected", "last_send", "loop", "receive", "scope", "started",
        "started_at",
    )  # fmt: skip

    def __init__(self, scope: Scope, receive: Receive, send: Send, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        """``headers`` go on the response whatever it is (HSTS: ``routing.relay.edge``)."""
        self.scope = scope
        self.receive = receive
        self._send = StallGuard(send, settings.SIRAYA_CLIENT_STALL_SECONDS, self._stalled, headers)
        self._cancel = CancelScope()
        self.loop = asyncio.get_running_loop()
        self.started_at = self.last_send = self.loop.time()
        self.started = False  # response headers sent: errors now go in-band
        self.disconnected = False  # nothing more reaches the client
        self._stream_headers: Headers | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def status(self) -> int:
        """The response's HTTP status, once its headers are sent (0 before)."""
        return self._send.status

    def header(self, name: bytes) -> str:
        for key, value in self.scope.get("headers", ()):
            if key == name:
                return str(value.decode("latin-1"))
        return ""

    async def read_body(self) -> bytes:
        """The request body, refused over its limit (413) or when it takes too long to arrive (408)."""
        limit = settings.SIRAYA_MAX_BODY_BYTES
        if edge.declared_length(self.scope) > limit:
            raise edge.too_large(limit)
        parts: list[bytes] = []
        size = 0
        seconds = settings.SIRAYA_BODY_READ_SECONDS
        try:
            async with asyncio.timeout(seconds):
                while True:
                    message = await self.receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    part = message.get("body", b"")
                    size += len(part)
                    if size > limit:
                        raise edge.too_large(limit)
                    parts.append(part)
                    if not message.get("more_body", False):
                        return b"".join(parts)
        except TimeoutError:
            raise edge.too_slow(seconds) from None

    # -- cancellation ---------------------------------------------------------------------

    def cancellable(self) -> ClientChannel:
        """``async with channel.cancellable():`` runs the block until it ends or the request is
        cancelled (``Interrupted`` with the reason). No generator: one fewer object per open stream."""
        return self

    async def __aenter__(self) -> None:
        lifecycle.track(self, asyncio.current_task())
        await self._cancel.__aenter__()
        if edge.DISCONNECT_CALLBACK not in self.scope:
            self._watcher = asyncio.create_task(self._watch_disconnect())
        elif self.scope[edge.DISCONNECT_CALLBACK] is False:  # the client left before this
            self._disconnected()
        else:
            self.scope[edge.DISCONNECT_CALLBACK] = self._disconnected  # one task per request

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._cancel.__aexit__(exc_type, exc, tb)
        finally:
            if self._watcher is not None:
                self._watcher.cancel()
                self._watcher = None
            elif edge.DISCONNECT_CALLBACK in self.scope:
                self.scope[edge.DISCONNECT_CALLBACK] = None  # the scope outlives the request's work
            self._send.close()

    def cancel(self, reason: str) -> None:
        """Stop the request: ``client_disconnected``, ``client_stalled`` or ``server_shutdown``."""
        self._cancel.cancel(reason)

    def release(self) -> None:
        """The request is settled: shutdown need not wait for it any more."""
        lifecycle.untrack(self)

    async def _watch_disconnect(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self._disconnected()
                return

    def _disconnected(self) -> None:
        self.disconnected = True
        self.cancel("client_disconnected")

    def _stalled(self) -> None:
        self.disconnected = True
        self.cancel("client_stalled")

    # -- sending --------------------------------------------------------------------------

    async def start(self, status: int, headers: Headers) -> None:
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def send(self, data: bytes, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})
        self.last_send = self.loop.time()

    def prepare_stream(self, headers: Headers) -> None:
        """The headers of the stream that ``send_chunk`` starts with its first chunk."""
        self._stream_headers = headers

    async def send_chunk(self, data: bytes, more: bool = True) -> None:
        if not self.started:
            # Dropped once sent: a held-open stream keeps no copy of its headers.
            headers, self._stream_headers = self._stream_headers, None
            assert headers is not None, "prepare_stream comes first"
            await self.start(200, headers)
        await self.send(data, more)

    async def answer(self, status: int, headers: Headers, body: bytes) -> None:
        """Send a whole response: headers and one body."""
        await self.start(status, headers)
        await self.send(body, more=False)

    async def keep_alive(self, comment: bytes) -> None:
        """Send ``comment`` whenever nothing was sent for the keepalive interval (starting the stream)."""
        interval = settings.SIRAYA_KEEPALIVE_SECONDS
        while not self.disconnected:
            wait = self.last_send + interval - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            await self.send_chunk(comment)
            if tracing.ENABLED:
                tracing.active().add_event("keepalive")  # the request's span: the task started in it
