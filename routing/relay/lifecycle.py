"""The router process's life: register and heartbeat, recover the dead's records, drain on shutdown.

At start (lifespan startup under ``siraya_site.serve``; the first request under daphne,
which has no lifespan) the process registers its ``RouterInstance``, settles the records
of dead processes (``billing.recovery``), and starts its heartbeat and a task that repeats
the recovery. On shutdown it lets running streams finish for the grace period, then stops
the rest (each ends with an error chunk and is settled), and marks its instance stopped.

The heartbeat runs in a thread of its own with its own database connection: a heartbeat
later than ``SIRAYA_INSTANCE_STALE_SECONDS`` lets another process settle this one's live
requests as interrupted, so it must not wait in any queue that requests fill (asgiref's
shared worker thread, the group-commit writer). The recovery can wait: it goes through the
shared thread as other database reads do.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection

from billing import recovery, rollups
from lib import tokens

logger = logging.getLogger("siraya.lifecycle")

# Bound on the wait for stopped streams to settle their records.
SETTLE_SECONDS = 10.0


class Stoppable(Protocol):
    def cancel(self, reason: str) -> None: ...


class Heartbeat(threading.Thread):
    """Write this process's heartbeat every ``interval`` seconds until ``stop``; nothing else runs here."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="siraya-heartbeat", daemon=True)
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.interval):
                try:
                    recovery.router_instance_heartbeat()
                except Exception:
                    logger.exception("router heartbeat failed")
                    connection.close()  # the next beat opens a fresh connection
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()


class _State:
    started: asyncio.Future[None] | None = None
    heartbeat: Heartbeat | None = None
    recovery: asyncio.Task[None] | None = None
    running: dict[Stoppable, asyncio.Task[Any]] = {}
    draining = False


_state = _State()


def _start_sync() -> None:
    # Load the tokenizer tables now, off the event loop: streams count tokens on the loop.
    tokens.warm_up()
    recovery.router_instance_register()
    for record in recovery.usage_records_reconcile():
        logger.warning(
            "settled interrupted request %s at %d delivered tokens (instance %s)",
            record.generation_id,
            record.tokens_delivered,
            record.instance_id,
        )


def _recover_sync() -> None:
    for record in recovery.usage_records_reconcile():
        logger.warning("settled interrupted request %s (instance %s)", record.generation_id, record.instance_id)
    rollups.usage_rollups_refresh_due()


async def ensure_started() -> None:
    """Register this process and recover dead processes' records, once."""
    if _state.started is None:
        _state.started = asyncio.get_running_loop().create_future()
        try:
            await database_sync_to_async(_start_sync)()
        except Exception:
            logger.exception("router instance registration failed")
        _state.heartbeat = Heartbeat(settings.SIRAYA_HEARTBEAT_SECONDS)
        _state.heartbeat.start()
        _state.recovery = asyncio.create_task(_recover())
        _settle_heap()
        _state.started.set_result(None)
    elif not _state.started.done():
        await asyncio.shield(_state.started)


def _settle_heap() -> None:
    """Move everything loaded at start (Django, the tokenizer tables: ~125k objects) out of the
    garbage collector's view. A full collection scanned them all, about 40 ms with the event
    loop stopped, every few thousand requests: a latency spike for every request in flight.
    Objects made later are collected as usual."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def _recover() -> None:
    """Settle dead processes' records at every heartbeat interval (``billing.recovery``)."""
    while True:
        await asyncio.sleep(settings.SIRAYA_HEARTBEAT_SECONDS)
        try:
            await database_sync_to_async(_recover_sync)()
        except Exception:
            logger.exception("recovery of dead processes' records failed")


def track(relay: Stoppable, task: asyncio.Task[Any] | None) -> None:
    """Note a running request; it calls ``untrack`` once its record is settled."""
    assert task is not None
    _state.running[relay] = task


def untrack(relay: Stoppable) -> None:
    _state.running.pop(relay, None)


def running() -> int:
    return len(_state.running)


async def drain(grace: float) -> None:
    """Wait up to ``grace`` seconds for running streams; stop the rest and wait for them to settle."""
    _state.draining = True
    tasks = set(_state.running.values())
    if tasks:
        logger.info("waiting up to %.1f s for %d running request(s)", grace, len(tasks))
        await asyncio.wait(tasks, timeout=grace)
    left = dict(_state.running)
    for relay in left:
        relay.cancel("server_shutdown")
    if left:
        logger.warning("stopped %d request(s) at the end of the shutdown grace period", len(left))
        await asyncio.wait(set(left.values()), timeout=SETTLE_SECONDS)


async def stop() -> None:
    """Drain what is left and mark this instance stopped."""
    await drain(0)
    if _state.recovery is not None:
        _state.recovery.cancel()
    if _state.heartbeat is not None:
        _state.heartbeat.stop()
        await asyncio.to_thread(_state.heartbeat.join, 5)
    if _state.started is not None:
        await database_sync_to_async(recovery.router_instance_stop)()
