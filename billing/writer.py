"""Group commit of the relay's database writes (admission and settlement of usage records).

Every request writes twice: admission opens its usage record, settlement closes it. Run one
by one, each write is a transaction of its own, and a commit (plus, through
``database_sync_to_async``, closing and reopening the connection around every call) costs far
more than the rows. Here one thread with one persistent connection takes every write queued
while the previous commit ran and commits them together in one transaction.

Nothing is dropped or deferred: the caller awaits its own write, which resolves once the
transaction holding it has committed.

The writes of a batch run without savepoints (a SAVEPOINT and a RELEASE per write were a
third of the statements): if any write fails, or leaves the transaction needing a rollback,
the whole batch is rolled back and every write of it is run again alone, in a transaction
and savepoint of its own, so one write that fails still undoes only itself and every caller
gets its own answer. A write waits at most for the commit in progress plus
its own batch (``MAX_BATCH`` writes), milliseconds on SQLite; there is no timer.

This thread shares the GIL with the event loop, so per batch it looks its connection up once,
adds the batch's settlements up per key and day and writes each day row once just before the
commit (``credit.usage_days_collected``), locks each key's row once (``hotsql.key_locks_kept``:
on PostgreSQL the lock statements were half of every request's round trips to the server),
and wakes each caller's event loop once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from billing import credit, hotsql
from billing.errors import BillingRefusal
from billing.hotsql.connection import connection_pinned

logger = logging.getLogger("siraya.writer")

P = ParamSpec("P")
T = TypeVar("T")
MAX_BATCH = 256
# The interpreter's GIL switch interval is left at its default (5 ms). It was lowered to
# 0.5 ms while the writer ran ~280 us of Python per request: the event loop then waited for the
# GIL after every epoll, send or recv. With the writer at ~50-80 us per request, the default
# measured better (c=32: 1,530 -> 1,580 req/s and 700 -> 740 streams/s against the same bare
# relay; c=1 p50 and p99 unchanged), since the loop is no longer forced off the GIL every 0.5 ms.

Work = Callable[[], Any]
Item = tuple[Work, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _run_one(work: Work) -> tuple[bool, Any]:
    """Run one write in a savepoint; return (succeeded, result or exception)."""
    try:
        with transaction.atomic():
            try:
                return True, work()
            except BillingRefusal as refusal:
                # A refusal is an answer, not a failure (it wrote nothing): the batch goes on.
                return False, refusal
    except Exception as exc:
        return False, exc


class _Redo(Exception):
    """A write of the batch failed: roll the batch back and run its writes one by one."""


def _run_together(batch: list[Item], conn: BaseDatabaseWrapper) -> list[tuple[bool, Any]]:
    results: list[tuple[bool, Any]] = []
    # A batch's settlements of one key on one day add to its day row once, before the commit;
    # its writes lock each key's row once.
    with credit.usage_days_collected(), hotsql.key_locks_kept():
        for work, _, _ in batch:
            try:
                results.append((True, work()))
            except BillingRefusal as refusal:
                results.append((False, refusal))  # an answer: it wrote nothing, the batch goes on
            except Exception as exc:
                raise _Redo from exc
            if conn.needs_rollback:
                raise _Redo
        try:
            credit.usage_days_flush()
        except Exception as exc:
            raise _Redo from exc
    return results


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        _settle(future, ok, value)


class GroupWriter:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.writes = 0

    def submit(self, work: Work) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._ensure_thread()
        self._queue.put((work, loop, future))
        return future

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="siraya-group-writer", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._commit(batch)

    def _commit(self, batch: list[Item]) -> None:
        conn = connections[DEFAULT_DB_ALIAS]
        if conn.errors_occurred:
            # The last batch failed (a database restart?): replace a broken connection before use.
            conn.close_if_unusable_or_obsolete()
        with connection_pinned(conn):
            try:
                with transaction.atomic():
                    results = _run_together(batch, conn)
            except _Redo:
                results = [self._alone(work) for work, _, _ in batch]
            except Exception:
                # The commit itself failed (connection lost, lock timeout): start over on a fresh
                # connection, one transaction per write, so each caller gets its own answer.
                logger.exception("group commit of %d writes failed; retrying one by one", len(batch))
                conn.close()
                results = [self._alone(work) for work, _, _ in batch]
        self.batches += 1
        self.writes += len(batch)
        # One wake-up of each caller's event loop per batch (each call_soon_threadsafe writes to
        # the loop's self-pipe), not one per write.
        settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, loop, future), (ok, value) in zip(batch, results, strict=True):
            settled.setdefault(loop, []).append((future, ok, value))
        for loop, futures in settled.items():
            try:
                loop.call_soon_threadsafe(_settle_all, futures)
            except RuntimeError:
                pass  # the caller's event loop is gone (process shutting down)

    @staticmethod
    def _alone(work: Work) -> tuple[bool, Any]:
        try:
            with transaction.atomic():
                return _run_one(work)
        except Exception as exc:
            connection.close()
            return False, exc


_writer = GroupWriter()


def group_committed(fn: Callable[P, T]) -> Callable[P, asyncio.Future[T]]:
    """Return a version of the synchronous write ``fn`` that queues it for the next group commit.

    The call queues the write at once and returns its future (no coroutine in between): the
    write happens whether or not the caller is still there to await it, and a caller that
    must not be interrupted can ``asyncio.shield`` the future without a task of its own."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        return _writer.submit(functools.partial(fn, *args, **kwargs))

    return call
