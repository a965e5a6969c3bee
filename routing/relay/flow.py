"""Flow control on the relay's hot path: the cancel scope every cancellation goes through, a
send that gives up on a client that stopped reading, and a vendor deadline that moves with
every batch of the answer.

Cancellation: the request's work runs inside a ``CancelScope`` (``ClientChannel.cancellable``;
a vendor attempt inside a ``Deadline``). Whoever decides the work must stop (the client left
or stalled, the server shuts down, the vendor took too long) calls the scope's ``cancel``
with a reason; the block then raises ``Interrupted(reason)``. The scope keeps the standard
library's ``asyncio.timeout`` bookkeeping (``Task.cancelling``/``uncancel``), which tells the
scope's own cancellation from any other: a cancellation from outside still propagates as
``CancelledError``.

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
from types import TracebackType
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Interrupted(Exception):
    """A ``CancelScope`` was cancelled, for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CancelScope:
    """``async with CancelScope() as scope``: ``scope.cancel(reason)`` from anywhere stops the block,
    which raises ``Interrupted(reason)``. The first reason wins; cancelling after the block is a no-op.

    The bookkeeping is ``asyncio.timeout``'s, without its object (one fewer per open stream):
    ``cancel`` from elsewhere cancels the task at once, from the block itself on the loop's next
    turn (never in the middle of its own code); on the way out the scope takes back its own cancellation with ``uncancel()`` and turns the
    ``CancelledError`` into ``Interrupted`` only if no other cancellation is pending, so one from
    outside (the server's) still propagates as ``CancelledError``.
    """

    __slots__ = ("_cancelling", "_handle", "_task", "reason")

    def __init__(self) -> None:
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0  # the task's pending cancellations when the block began
        self._handle: asyncio.Handle | None = None  # the scheduled cancellation, until it runs
        self.reason = ""

    async def __aenter__(self) -> CancelScope:
        task = asyncio.current_task()
        assert task is not None, "a CancelScope runs in a task"
        self._task, self._cancelling = task, task.cancelling()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        assert task is not None
        if self._handle is not None:  # cancelled, but the block ended first: nothing was delivered
            self._handle.cancel()
            self._handle = None
        elif self.reason and task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise Interrupted(self.reason) from None

    def cancel(self, reason: str) -> None:
        if self._task is not None and not self.reason:
            self.reason = reason
            if asyncio.current_task() is self._task:
                # From the block itself: on the loop's next turn, never in the middle of its code.
                self._handle = asyncio.get_running_loop().call_soon(self._deliver)
            else:
                # From elsewhere (the client's disconnect, a stall, shutdown, a deadline's timer): at
                # once, so the task is stopped wherever it resumes next. A turn later, a chunk the
                # vendor sent meanwhile could be handed to a server that drops it (the client is
                # gone) and be billed as delivered.
                self._task.cancel()

    def _deliver(self) -> None:
        self._handle = None
        assert self._task is not None
        self._task.cancel()


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
    """Wrap ASGI ``send`` so that a body write blocked for ``seconds`` calls ``on_stall`` (which
    cancels the request: ``ClientChannel``) and aborts the connection (whose disconnect event follows).
    """

    __slots__ = ("_flow", "_loop", "_on_stall", "_seconds", "_since", "_timer", "stalled")

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
        self._timer: asyncio.TimerHandle | None = None
        self.stalled = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.stalled:
            return  # the connection is aborted: nothing more reaches the client
        if message["type"] != "http.response.body":
            await super().__call__(message)
            return
        if self._flow is not None and not self._flow.write_paused:
            await self._raw(message)
            return
        since = self._since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(since + self._seconds, self._check)
        try:
            await self._raw(message)
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


class Deadline(CancelScope):
    """``async with Deadline(seconds)``: a ``CancelScope`` cancelled for ``"deadline"`` when its
    deadline passes; ``move`` sets a later one at the cost of an attribute write."""

    __slots__ = ("_armed", "_loop", "_timer", "due")

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self.due = self._armed = self._loop.time() + seconds
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> Deadline:
        await super().__aenter__()
        self._timer = self._loop.call_at(self._armed, self._check)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await super().__aexit__(exc_type, exc, tb)

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
        self.cancel("deadline")
