"""Flow control on the relay's hot path: a send that gives up on a client that stopped reading,
and a vendor deadline that moves with every batch of the answer.

Under uvicorn (``siraya_site.serve``) ``send`` waits while the connection's write buffer is
above its high-water mark (64 KiB), so a slow client holds the relay, the relay stops
reading the vendor's response, and TCP pushes back to the vendor: each stream buffers a
bounded amount. A client whose buffer stays full for ``SIRAYA_CLIENT_STALL_SECONDS`` is
treated as gone: its connection is aborted, not flushed (a flush would wait forever).

daphne's ``send`` never waits (Twisted buffers without limit), so under daphne neither the
backpressure nor the stall detection applies; production runs ``siraya_site.serve``.

Both guards are watchdogs rather than ``asyncio.timeout`` blocks: an ``asyncio.timeout``
entered (or rescheduled) per chunk creates and cancels a timer handle each time, which the
profile showed as a fifth of the event loop's time on streams (see the commit message).
Here a send or a vendor batch costs a clock read and an attribute write; the one timer per
guard wakes at the earliest moment the guard could fire and re-arms itself if it was moved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]


class ClientStalled(Exception):
    """The client took no data for the stall timeout."""


class StatusSend:
    """ASGI ``send`` that remembers the response's status (0 until the headers are sent) and adds
    ``headers`` to the response's own (HSTS on the relay's path: ``routing.relay.edge``)."""

    __slots__ = ("_headers", "_raw", "status")

    def __init__(self, send: Send, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self._raw = send
        self._headers = headers
        self.status = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self._headers:
                message = {**message, "headers": [*message["headers"], *self._headers]}
        await self._raw(message)


class StallGuard(StatusSend):
    """Wrap ASGI ``send`` so a body write blocked for ``seconds`` raises ``ClientStalled``.

    ``on_stall`` runs first, before the connection is aborted (whose disconnect event follows).
    """

    __slots__ = ("_flow", "_loop", "_on_stall", "_seconds", "_sender", "_since", "_timer", "stalled")

    def __init__(
        self, send: Send, seconds: float, on_stall: Callable[[], None], headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        super().__init__(send, headers)
        # uvicorn's flow control, when ``send`` is uvicorn's own: its send waits only while
        # ``write_paused`` is set, so a send made while it is clear cannot stall and needs no
        # watchdog (no timer per open stream). Any other server: every body send is watched.
        self._flow = getattr(getattr(send, "__self__", None), "flow", None)
        if not isinstance(getattr(self._flow, "write_paused", None), bool):
            self._flow = None
        self._seconds = seconds
        self._on_stall = on_stall
        self._loop = asyncio.get_running_loop()
        self._since: float | None = None  # when the body write in progress began
        self._sender: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.stalled = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.stalled:
            raise ClientStalled
        if message["type"] != "http.response.body":
            await super().__call__(message)
            return
        if self._flow is not None and not self._flow.write_paused:
            await self._raw(message)
            return
        since = self._since = self._loop.time()
        self._sender = asyncio.current_task()
        if self._timer is None:
            self._timer = self._loop.call_at(since + self._seconds, self._check)
        try:
            await self._raw(message)
        except asyncio.CancelledError:
            if self.stalled and self._sender is not None and self._sender.uncancel() == 0:
                raise ClientStalled from None
            raise
        finally:
            self._since = None

    def _check(self) -> None:
        self._timer = None
        since = self._since
        if since is None:
            return  # no write in progress: the next one arms the timer again
        due = since + self._seconds
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check)
            return
        self.stalled = True
        self._on_stall()
        abort_connection(self._raw)
        if self._sender is not None:
            self._sender.cancel("client_stalled")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def abort_connection(send: Send) -> None:
    """Drop the client's connection without flushing (uvicorn's send is bound to its cycle)."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if isinstance(transport, asyncio.Transport):
        transport.abort()


class Deadline:
    """A deadline for the current task that is cheap to move later (``move``).

    When the deadline passes, the task is cancelled and ``expired`` is set; the code that
    catches the ``CancelledError`` turns it into its own timeout error (``expired_here``),
    the way ``asyncio.timeout`` does.
    """

    __slots__ = ("_armed", "_loop", "_task", "_timer", "due", "expired")

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self.expired = False
        self._timer: asyncio.TimerHandle | None = None
        self.due = self._armed = self._loop.time() + seconds
        self._timer = self._loop.call_at(self._armed, self._check)

    def move(self, due: float) -> None:
        """Set the deadline to ``due``: an attribute write, unless it comes before the timer."""
        self.due = due
        if due < self._armed and self._timer is not None:
            self._timer.cancel()
            self._armed = due
            self._timer = self._loop.call_at(due, self._check)

    def _check(self) -> None:
        if self._loop.time() < self.due:
            self._armed = self.due
            self._timer = self._loop.call_at(self.due, self._check)
            return
        self._timer = None
        self.expired = True
        self._task.cancel("deadline")

    def expired_here(self) -> bool:
        """In an ``except CancelledError``: True when this deadline (and nothing else) cancelled the task."""
        return self.expired and self._task.uncancel() == 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
