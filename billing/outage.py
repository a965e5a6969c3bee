"""The database going away: how the ledger tells an outage from a bug, and how long it waits.

A request that needs the database to be admitted (its key unknown to the cache, its route,
its admission write) waits for it at most ``SIRAYA_DB_UNAVAILABLE_SECONDS``, then gets
``DatabaseUnavailable`` (503 ``database_unavailable``, ``Retry-After``): not a 500, not a hang.
Writes of requests already admitted (checkpoints, settlements) never fail their request: they
are kept and retried until the database is back (``billing.pending``).

An outage is an ``OperationalError`` or ``InterfaceError`` of the driver (connection refused,
closed or reset, the server shutting down), and on SQLite only a file that is locked, busy or
cannot be opened: SQLite raises ``OperationalError`` for a missing table too, which is a bug
to report, not a reason to wait.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable
from typing import TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections

from billing.errors import DatabaseUnavailable

T = TypeVar("T")

_SQLITE_OUTAGE = ("locked", "busy", "unable to open", "disk i/o")


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot be reached now (not that a statement is wrong)."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if connections[DEFAULT_DB_ALIAS].vendor != "sqlite":
        return True
    text = str(exc).lower()
    return any(words in text for words in _SQLITE_OUTAGE)


def bound_seconds() -> float:
    return float(settings.SIRAYA_DB_UNAVAILABLE_SECONDS)


def admits_during_outage() -> bool:
    """True when requests are admitted against the journal while the database is away."""
    return settings.SIRAYA_ADMIT_DURING_OUTAGE == "journal"


def refusal() -> DatabaseUnavailable:
    return DatabaseUnavailable(retry_after=max(1, math.ceil(bound_seconds())))


class _State:
    """When the database last failed and last answered (monotonic seconds; 0: never)."""

    failed_at = 0.0
    answered_at = 0.0


state = _State()


def noted_failure() -> None:
    state.failed_at = time.monotonic()


def noted_answer() -> None:
    state.answered_at = time.monotonic()


def seems_down() -> bool:
    """True when the database's last word was a failure (no answer since)."""
    return state.failed_at > state.answered_at


async def within_bound(pending: Awaitable[T]) -> T:
    """Await a database operation for at most ``SIRAYA_DB_UNAVAILABLE_SECONDS``; an outage or the
    bound passing raises ``DatabaseUnavailable``. A future is shielded: its work goes on."""
    future = asyncio.ensure_future(pending)
    try:
        result = await asyncio.wait_for(asyncio.shield(future), bound_seconds())
    except TimeoutError:
        noted_failure()
        raise refusal() from None
    except Exception as exc:
        if is_outage(exc):
            noted_failure()
            raise refusal() from exc
        raise
    noted_answer()
    return result
