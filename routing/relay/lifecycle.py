"""The router process's life: register and heartbeat, recover the dead's records, drain on shutdown.

At start (lifespan startup under ``siraya_site.serve``; the first request under daphne,
which has no lifespan) the process registers its ``RouterInstance``, settles the records
of dead processes (``billing.recovery``), and starts a heartbeat that repeats the recovery.
On shutdown it lets running streams finish for the grace period, then stops the rest
(each ends with an error chunk and is settled), and marks its instance stopped.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from billing import recovery
from lib import tokens

logger = logging.getLogger("siraya.lifecycle")

# Bound on the wait for stopped streams to settle their records.
SETTLE_SECONDS = 10.0


class Stoppable(Protocol):
    def stop(self, reason: str) -> None: ...


class _State:
    started: asyncio.Future[None] | None = None
    heartbeat: asyncio.Task[None] | None = None
    running: dict[Stoppable, asyncio.Task[object]] = {}
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


def _beat_sync() -> None:
    recovery.router_instance_heartbeat()
    for record in recovery.usage_records_reconcile():
        logger.warning("settled interrupted request %s (instance %s)", record.generation_id, record.instance_id)


async def ensure_started() -> None:
    """Register this process and recover dead processes' records, once."""
    if _state.started is None:
        _state.started = asyncio.get_running_loop().create_future()
        try:
            await database_sync_to_async(_start_sync)()
        except Exception:
            logger.exception("router instance registration failed")
        _state.heartbeat = asyncio.create_task(_heartbeat())
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


async def _heartbeat() -> None:
    while True:
        await asyncio.sleep(settings.SIRAYA_HEARTBEAT_SECONDS)
        try:
            await database_sync_to_async(_beat_sync)()
        except Exception:
            logger.exception("router heartbeat failed")


def track(relay: Stoppable, task: asyncio.Task[object]) -> None:
    """Note a running request; it calls ``untrack`` once its record is settled."""
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
        relay.stop("server_shutdown")
    if left:
        logger.warning("stopped %d request(s) at the end of the shutdown grace period", len(left))
        await asyncio.wait(set(left.values()), timeout=SETTLE_SECONDS)


async def stop() -> None:
    """Drain what is left and mark this instance stopped."""
    await drain(0)
    if _state.heartbeat is not None:
        _state.heartbeat.cancel()
    if _state.started is not None:
        await database_sync_to_async(recovery.router_instance_stop)()
