"""Writes kept through a database outage: retried until they land, in order, at most once each.

The writes of requests already admitted (checkpoints, settlements) and the records of
refused requests must not fail their request when the database is away. ``billing.ledger``
hands each one that could not be written here (``keep``), and while anything is kept, every
later one joins the queue behind it, so they land in the order they were made.

One thread of its own (``siraya-pending-writes``, with its own connection, checked before
use) writes them one by one, each in a transaction of its own, retrying the oldest with a
growing pause (``SIRAYA_PENDING_RETRY_SECONDS`` at most) while the database is down, and at
once when a request finds it back (``wake``). Applying a write twice changes nothing:
settlement and checkpoints only touch a record still ``in_progress``, and a refused
request's record has a unique generation id.

Memory is bounded: past ``SIRAYA_PENDING_WRITES_MEMORY`` writes, the rest go to this process's
journal (``billing.journal``), fsync'd line by line, and everything after them too until the
journal is written out. The admission of a request admitted during an outage goes to the
journal whatever the bound (``keep_on_disk``: its caller waits for the fsync), and so its
record's later writes follow it there. A process that dies with writes in its journal leaves the file
behind; the next recovery pass of any process on the machine replays it before settling the
dead process's records as interrupted (``billing.recovery``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from billing import journal, outage
from billing.journal import Write
from lib import metrics

logger = logging.getLogger("siraya.pending")

_FIRST_PAUSE = 0.05  # seconds before the first retry; doubled after each failure


@dataclass
class Depth:
    memory: int
    journal: int
    oldest_seconds: float  # age of the oldest kept write (0: none)

    @property
    def total(self) -> int:
        return self.memory + self.journal


@dataclass
class PendingWrites:
    memory: deque[Write] = field(default_factory=deque)
    # Past the memory bound: writes waiting for the journal thread's next append and fsync.
    spill: list[Write] = field(default_factory=list)
    _journal: journal.Journal | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _spilled: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _journal_thread: threading.Thread | None = None
    _appending: int = 0  # writes taken from ``spill``, being appended (not yet in ``depth``)
    # Awaiting the fsync of writes in ``spill`` (``keep_on_disk``): their loops and futures.
    _on_disk: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]] = field(default_factory=list)
    applied: int = 0
    dropped: int = 0

    def busy(self) -> bool:
        """True while any write is kept (a new one must then queue behind them)."""
        return bool(self.memory or self.spill or self._appending) or (
            self._journal is not None and self._journal.depth > 0
        )

    def keep(self, write: Write) -> None:
        """Keep ``write`` until the database takes it; past the memory bound, in the journal.

        Called on the event loop: the journal's fsync happens in a thread of its own."""
        with self._lock:
            on_disk = self.spill or self._appending or (self._journal is not None and self._journal.depth > 0)
            if on_disk or len(self.memory) >= settings.SIRAYA_PENDING_WRITES_MEMORY:
                self.spill.append(write)
                self._ensure_threads()
                self._spilled.set()
                return
            self.memory.append(write)
            self._ensure_threads()
        self._wake.set()

    def keep_on_disk(self, write: Write) -> asyncio.Future[bool]:
        """Keep ``write`` in the journal whatever the memory bound (an admission against the
        journal). The future resolves to True once the line is fsync'd; to False if the disk
        refused it (it is kept in memory then, like any write past a failing disk)."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[bool] = loop.create_future()
        with self._lock:
            self.spill.append(write)
            self._on_disk.append((loop, written))
            self._ensure_threads()
            self._spilled.set()
        return written

    def wake(self) -> None:
        """The database answered a request: retry now rather than at the end of the pause."""
        if self.busy():
            self._wake.set()

    def depth(self) -> Depth:
        with self._lock:
            oldest = self.memory[0].at if self.memory else None
            in_journal = len(self.spill) + self._appending + (0 if self._journal is None else self._journal.depth)
            if oldest is None and self._journal is not None and self._journal.depth:
                oldest = self._journal.oldest_at()
            if oldest is None and self.spill:
                oldest = self.spill[0].at
        return Depth(len(self.memory), in_journal, 0.0 if oldest is None else max(0.0, time.time() - oldest))

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every kept write to land; return whether they all did."""
        deadline = time.monotonic() + timeout
        while self.busy():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # -- the threads ---------------------------------------------------------------------

    def _ensure_threads(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="siraya-pending-writes", daemon=True)
            self._thread.start()
        if self.spill and (self._journal_thread is None or not self._journal_thread.is_alive()):
            self._journal_thread = threading.Thread(target=self._spill_run, name="siraya-journal", daemon=True)
            self._journal_thread.start()

    def _spill_run(self) -> None:
        """Append what spilled past the memory bound to the journal: one write and fsync per round."""
        own = journal.Journal.own()
        while True:
            self._spilled.wait()
            with self._lock:
                self._spilled.clear()
                writes, self.spill = self.spill, []
                waiting, self._on_disk = self._on_disk, []
                self._appending = len(writes)
            if not writes:
                continue
            try:
                own.append(writes)
            except OSError:
                # A full or failing disk: the writes stay in memory, past the bound, and are kept.
                logger.exception("could not append %d write(s) to the journal", len(writes))
                with self._lock:
                    self.memory.extend(writes)
                    self._appending = 0
                _resolve(waiting, False)
                self._wake.set()
                continue
            with self._lock:
                self._journal = own
                own.registered(len(writes))
                self._appending = 0
            _resolve(waiting, True)
            self._wake.set()

    def _oldest(self) -> Write | None:
        with self._lock:
            if self.memory:
                return self.memory[0]
            if self._journal is not None and self._journal.depth > 0:
                return self._journal.peek()
        return None

    def _landed(self, write: Write) -> None:
        with self._lock:
            if self.memory and self.memory[0] is write:
                self.memory.popleft()
            elif self._journal is not None:
                self._journal.advance()

    def _run(self) -> None:
        pause = _FIRST_PAUSE
        while True:
            write = self._oldest()
            if write is None:
                self._wake.clear()
                if self._oldest() is None:
                    self._wake.wait(60)
                continue
            if self._apply(write):
                pause = _FIRST_PAUSE
                continue
            self._wake.clear()
            self._wake.wait(pause)
            pause = min(pause * 2, settings.SIRAYA_PENDING_RETRY_SECONDS)

    def _apply(self, write: Write) -> bool:
        """Write ``write``; return False when the database is still away (try again later)."""
        conn = connections[DEFAULT_DB_ALIAS]
        # A connection broken by the outage is noticed and replaced before use, not after a failure.
        conn.close_if_unusable_or_obsolete()
        try:
            journal.apply(write)
        except Exception as exc:
            if outage.is_outage(exc):
                outage.noted_failure()
                conn.close()
                return False
            # Not an outage (a bug, or a record that no longer exists): retrying cannot help.
            logger.exception("dropped a kept %s write of record %s", write.kind, write.record_id)
            self.dropped += 1
        else:
            outage.noted_answer()
            self.applied += 1
        self._landed(write)
        return True


def _resolve(waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]], on_disk: bool) -> None:
    for loop, written in waiting:
        try:
            loop.call_soon_threadsafe(_set, written, on_disk)
        except RuntimeError:
            pass  # its loop is closed: nobody waits for it any more


def _set(written: asyncio.Future[bool], on_disk: bool) -> None:
    if not written.done():
        written.set_result(on_disk)


pending = PendingWrites()


def metrics_refresh() -> None:
    """Set the pending-write gauges (``lib.metrics``) from this process's figures."""
    depth = pending.depth()
    metrics.PENDING_WRITES.labels("memory").set(depth.memory)
    metrics.PENDING_WRITES.labels("journal").set(depth.journal)
    metrics.PENDING_WRITE_AGE.set(depth.oldest_seconds)


metrics.before_scrape(metrics_refresh)
