"""What this process last knew of each limited key's spend, for admission during a database outage.

With ``SIRAYA_ADMIT_DURING_OUTAGE=journal`` a request admitted while the database is away is
checked against the key's credit limit here: the key's spend plus held money as this process
last read it from the database (``credit.reserve`` notes it at every admission of the key in this mode,
this admission's hold included), plus the worst case (once settled: the estimated cost) of
every request this process admitted for the key against the journal since and whose record
that read did not include. Nothing here reads the database; it is a figure per process, so
processes sharing a key each admit against their own.

An admission from the journal stops counting here once its record has landed and a later
read of the key's spend has taken it in (the read's tick is taken before it starts: a record
that lands during the read counts twice for a moment, never zero times).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from decimal import Decimal

_MAX_KEYS = 100_000


@dataclass(slots=True)
class _Admitted:
    """A request admitted against the journal: what it counts against its key."""

    amount: Decimal  # USD: its worst case, then its estimated cost once settled
    landed_tick: int | None = None  # when its record reached the database (None: not yet)


_lock = threading.Lock()
_ticks = itertools.count(1)
_read: dict[int, Decimal] = {}  # key id -> spend + held, USD, at the key's last read
_admitted: dict[int, dict[str, _Admitted]] = {}  # key id -> generation id -> its admission
_key_of: dict[str, int] = {}  # generation id -> key id, for those in ``_admitted``


def tick() -> int:
    """A point in this process's order of events; take it before reading a key's spend."""
    return next(_ticks)


def noted(key_id: int, spend_and_held: Decimal, read_since: int) -> None:
    """The database said the key has ``spend_and_held`` USD spent and held (read after ``read_since``)."""
    with _lock:
        if len(_read) >= _MAX_KEYS and key_id not in _read:
            _read.clear()  # a forgotten key is refused during an outage, never admitted unchecked
        _read[key_id] = spend_and_held
        mine = _admitted.get(key_id)
        if mine:
            for generation_id in [
                g for g, a in mine.items() if a.landed_tick is not None and a.landed_tick < read_since
            ]:
                del mine[generation_id]
                del _key_of[generation_id]


def figure(key_id: int) -> Decimal | None:
    """Return the key's spend and held money as far as this process knows (None: never read)."""
    with _lock:
        read = _read.get(key_id)
        if read is None:
            return None
        return read + sum((a.amount for a in _admitted.get(key_id, {}).values()), Decimal(0))


def admitted(key_id: int, generation_id: str, worst: Decimal) -> None:
    with _lock:
        _admitted.setdefault(key_id, {})[generation_id] = _Admitted(worst)
        _key_of[generation_id] = key_id


def _find(generation_id: str) -> _Admitted | None:
    key_id = _key_of.get(generation_id)
    return None if key_id is None else _admitted[key_id].get(generation_id)


def settled(generation_id: str, cost: Decimal) -> None:
    """An admitted request ended: it counts for its estimated cost from now on, not its worst case."""
    with _lock:
        found = _find(generation_id)
        if found is not None:
            found.amount = cost


def withdrawn(generation_id: str) -> None:
    """The admission did not go ahead (its journal line could not be written, or it was cancelled)."""
    with _lock:
        key_id = _key_of.pop(generation_id, None)
        if key_id is not None:
            _admitted[key_id].pop(generation_id, None)


def landed(generation_id: str) -> None:
    """Its record reached the database (the next read of its key's spend includes it)."""
    with _lock:
        found = _find(generation_id)
        if found is not None and found.landed_tick is None:
            found.landed_tick = next(_ticks)


def forget() -> None:
    """Forget every figure (tests)."""
    with _lock:
        _read.clear()
        _admitted.clear()
        _key_of.clear()
