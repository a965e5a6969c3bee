"""What admission and settlement share: one transaction per write, and the records this
process opened and has not settled yet."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import transaction

from billing.cost import Prices
from billing.hotsql.connection import in_transaction
from lib import process

_NESTED = contextlib.nullcontext()


def now() -> datetime:
    """``timezone.now()`` (USE_TZ is on) without its settings lookup, twice per request."""
    return datetime.now(UTC)


def atomic() -> contextlib.AbstractContextManager[Any]:
    """One transaction for a write, without a savepoint of its own: none when already in one (in
    the group commit each write has its savepoint, or the batch is redone write by write)."""
    return _NESTED if in_transaction() else transaction.atomic(savepoint=False)


_instance: str | None = None


def instance_id() -> str:
    """``process.instance_id()`` without a getpid() system call per request (reset on fork)."""
    global _instance
    if _instance is None:
        _instance = process.instance_id()
    return _instance


def _instance_forget() -> None:
    global _instance
    _instance = None


os.register_at_fork(after_in_child=_instance_forget)


@dataclass(frozen=True, slots=True)
class Opened:
    """What settlement needs of a record this process just opened, as it was written."""

    generation_id: str
    api_key_id: int
    model_id: int
    created_at: datetime
    prices: Prices
    # The ANSWERING fields as admission wrote them (their defaults when it did not).
    answering: tuple[Any, ...]


# Records opened by this process and not yet settled: settlement updates them without
# reading them back first. The UPDATE is guarded by the generation id and the in-progress
# status, so a stale entry (a rolled-back admission, a flushed database) never applies; any
# record not found here, or not updated, is read back and settled the ordinary way.
opened: dict[int, Opened] = {}
# The fields naming the deployment that answered, and their values until one did.
ANSWERING_DEFAULTS: dict[str, Any] = {
    "deployment_id": None,
    "vendor_id": None,
    "vendor_name": "",
    "upstream_model": "",
}
ANSWERING = tuple(ANSWERING_DEFAULTS)
_PRICE_PLACES = Decimal("0.000001")  # UsageRecord's price fields: 12 digits, 6 places


def storable(prices: Prices) -> bool:
    """True when the prices read back from a usage record are exactly these (no rounding)."""
    known = _storable_known.get(id(prices))
    if known is not None and known[0] is prices:
        return known[1]
    exact = all(
        p.is_finite() and p == p.quantize(_PRICE_PLACES) and abs(p) < 1_000_000
        for p in (prices.input, prices.output, prices.cached_input, prices.reasoning, prices.request)
    )
    if len(_storable_known) >= 1_000:
        _storable_known.clear()
    _storable_known[id(prices)] = (prices, exact)  # holds prices: the id is not reused meanwhile
    return exact


# Routes are cached, so admissions see the same Prices objects again and again.
_storable_known: dict[int, tuple[Prices, bool]] = {}
