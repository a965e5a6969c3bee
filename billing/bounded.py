"""Database writes awaited within the outage bound (``SIRAYA_DB_UNAVAILABLE_SECONDS``), kept by one watch per event loop.

``written`` is a settlement's or a checkpoint's: past the bound, or on an outage, it resolves to
its fallback (what it will bill) and the write is kept until it lands (``billing.pending``).
``bounded`` is an admission's: past the bound, or on an outage, it fails with ``DatabaseUnavailable``.
Either way the write itself goes on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from billing import journal, outage
from billing.errors import DatabaseUnavailable
from billing.pending import pending

T = TypeVar("T")


def written(
    inner: asyncio.Future[T], kept: Callable[[], journal.Write], fallback: Callable[[], T]
) -> asyncio.Future[T]:
    """Return a future of ``inner`` (a write) that resolves to ``fallback()`` if the database fails
    it or takes longer than the outage bound; ``kept()`` is then kept until it lands. ``inner``
    goes on regardless (a write that failed late is kept all the same). Both are called only
    then: a healthy database costs neither."""
    outer: asyncio.Future[T] = inner.get_loop().create_future()

    def landed(done: asyncio.Future[T]) -> None:
        exc = None if done.cancelled() else done.exception()
        if exc is not None and outage.is_outage(exc):
            outage.noted_failure()
            pending.keep(kept())
            if not outer.done():
                outer.set_result(fallback())
            return
        if exc is None and not done.cancelled():
            outage.noted_answer()
            pending.wake()
        if outer.done():
            return
        if done.cancelled():
            outer.cancel()
        elif exc is not None:
            outer.set_exception(exc)
        else:
            outer.set_result(done.result())

    waiting = _watch(inner.get_loop()).add(outer, fallback)
    inner.add_done_callback(landed)
    inner.add_done_callback(waiting.forget)
    return outer


class _Waiting:
    """A write awaited within the outage bound: its answer (``outer``) and what it falls back to."""

    __slots__ = ("due", "fallback", "outer")

    def __init__(self, due: float, outer: asyncio.Future[Any], fallback: Callable[[], Any]) -> None:
        self.due = due
        self.outer: asyncio.Future[Any] | None = outer
        self.fallback: Callable[[], Any] | None = fallback

    def forget(self, _: object = None) -> None:
        """The write landed: what it answered need not live until the watch reaches it."""
        self.outer = self.fallback = None


class _Watch:
    """The outage bound of every write awaited on one event loop, kept by one timer.

    A timer per write (``asyncio.wait_for``, ``call_later``) measured ~30 us a settlement: the
    loop's heap fills with cancelled timers. Here a write costs a deque append; writes wait the
    same bound, so the oldest is always at the front. A write that lands drops its answer from
    its entry at once (an admission's answer is the request's ticket)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: deque[_Waiting] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.bound = outage.bound_seconds()  # read again at every check, not at every write

    def add(self, outer: asyncio.Future[Any], fallback: Callable[[], Any]) -> _Waiting:
        waiting = _Waiting(self.loop.time() + self.bound, outer, fallback)
        self.waiting.append(waiting)
        if self.timer is None:
            self.timer = self.loop.call_later(self.bound, self.check)
        return waiting

    def check(self) -> None:
        self.bound = outage.bound_seconds()
        now = self.loop.time()
        waiting = self.waiting
        while waiting and (waiting[0].outer is None or waiting[0].outer.done() or waiting[0].due <= now):
            entry = waiting.popleft()
            outer, fallback = entry.outer, entry.fallback
            if outer is not None and fallback is not None and not outer.done():
                outage.noted_failure()  # still queued: kept by ``landed`` if it fails in the end
                try:
                    outer.set_result(fallback())
                except DatabaseUnavailable as refused:
                    outer.set_exception(refused)
        self.timer = self.loop.call_later(max(0.05, waiting[0].due - now), self.check) if waiting else None


_watched: list[_Watch] = []  # the watch of the event loop in use (one per process, but for tests)


def _watch(loop: asyncio.AbstractEventLoop) -> _Watch:
    if _watched and _watched[0].loop is loop:
        return _watched[0]
    _watched[:] = [_Watch(loop)]
    return _watched[0]


def bounded(inner: asyncio.Future[T]) -> asyncio.Future[T]:
    """Return a future of ``inner`` that fails with ``DatabaseUnavailable`` on an outage or once
    the bound has passed (``inner`` goes on); kept by the loop's one watch, like ``_written``."""
    outer: asyncio.Future[T] = inner.get_loop().create_future()

    def landed(done: asyncio.Future[T]) -> None:
        if outer.done():
            return
        if done.cancelled():
            outer.cancel()
            return
        exc = done.exception()
        if exc is None:
            outage.noted_answer()
            pending.wake()
            outer.set_result(done.result())
        elif outage.is_outage(exc):
            outage.noted_failure()
            outer.set_exception(outage.refusal())
        else:
            outer.set_exception(exc)

    waiting = _watch(inner.get_loop()).add(outer, _refuse)
    inner.add_done_callback(landed)
    inner.add_done_callback(waiting.forget)
    return outer


def _refuse() -> Any:
    raise outage.refusal()
