"""The relay's per-request statements as SQL built once per database vendor.

Admission and settlement run for every request, in the group-commit writer thread
(``billing.writer``), which shares the GIL with the event loop: every microsecond of Python
here is taken from the relay. So each statement's SQL is built once from the models' metadata,
in the driver's own paramstyle, and executed on the DB-API cursor of Django's connection (same
connection, same transaction), without Django's cursor wrapper: no cursor per statement, no
thread-sharing check, no ``%s`` to ``?`` regex on SQLite. Driver errors are still raised as
Django's (``IntegrityError`` ...), and a statement that fails inside ``transaction.atomic``
still rolls it back (the exception passes through it). These statements are not in
``connection.queries`` nor seen by ``execute_wrapper``. On PostgreSQL they bind their
parameters server-side and are prepared once per connection (``SIRAYA_DB_PREPARED``).

Values are adapted as the ORM adapts them (``Field.get_db_prep_save``), by adapters built once
per field: the ORM reads back exactly what it would have written (``billing/tests/test_hotsql.py``).
Rows read back go through the ORM's own converters.

This module holds the statements admission and settlement run. The rest of the package:
``connection`` (this thread's connection and raw cursor), ``adapters`` (values as the ORM
stores them), ``statements`` (the SQL of each statement, per vendor).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from billing.hotsql.connection import db, execute
from billing.hotsql.statements import statements
from billing.models import ApiKey, UsageStatus

KeyTerms = tuple[Decimal | None, str]  # (credit_limit, limit_reset)


class _Held(threading.local):
    # While a group commit's transaction runs on this thread: the keys whose row it has locked,
    # with their terms (None: locked through one of its records, terms not read yet).
    keys: dict[int, KeyTerms | None] | None = None


_held = _Held()
# The key of each in-progress record this process inserted (PostgreSQL): settlement locks the
# key by its id, or not at all when its batch holds it already, instead of joining the record.
# A record's key never changes and its id is never reused, so an entry is never wrong; one
# left behind (a rolled-back admission) only takes room, and the map is emptied when large.
_record_keys: dict[int, int] = {}
RECORD_KEYS_MAX = 100_000


@contextlib.contextmanager
def key_locks_kept() -> Iterator[None]:
    """Within (one transaction, the group commit's): a key's row is locked once, not per write.

    A row lock lasts until the transaction ends, so the batch's later admissions and
    settlements of a key find it held and skip the statement (PostgreSQL: two of every
    request's four). Locks taken inside a savepoint are not kept: a rollback to it releases them.
    """
    _held.keys = {}
    try:
        yield
    finally:
        _held.keys = None


def _kept(key_id: int, terms: KeyTerms | None) -> None:
    held = _held.keys
    if held is not None and not db().savepoint_ids:
        held[key_id] = terms


def key_lock(key_id: int) -> KeyTerms:
    """Lock the key's row (PostgreSQL: ``FOR NO KEY UPDATE``); return (credit_limit, limit_reset)."""
    held = _held.keys
    if held is not None:
        terms = held.get(key_id)
        if terms is not None:
            return terms  # locked by this transaction: nobody else can have changed the row since
    row = statements().key_lock.one((key_id,))
    if row is None:
        raise ApiKey.DoesNotExist(f"no API key {key_id}")
    terms = (row[0], row[1])
    _kept(key_id, terms)
    return terms


def key_of_record_lock(record_id: int) -> None:
    """Lock the key of a usage record (PostgreSQL); nothing to do where there are no row locks."""
    s = statements()
    if not s.locks:
        return
    key_id = _record_keys.pop(record_id, None)
    if key_id is None:
        row = execute(s.key_of_record, (record_id,)).fetchone()
        if row is not None:
            _kept(row[0], None)
        return
    held = _held.keys
    if held is not None and key_id in held:
        return
    with contextlib.suppress(ApiKey.DoesNotExist):  # the key is gone, and so is the record
        key_lock(key_id)


def last_used_set(key_id: int, now: datetime) -> None:
    s = statements()
    execute(s.last_used, [*s.last_used_columns.params((now,)), key_id])


def record_insert(values: dict[str, Any]) -> int:
    """INSERT one usage record (``values`` by attname, the rest at the fields' defaults); return its id."""
    s = statements()
    insert = s.insert(tuple(values))
    cursor = execute(insert.sql, insert.params(values.values()))
    record_id = int(cursor.fetchone()[0]) if insert.returning else int(cursor.lastrowid)
    if s.locks and values.get("status") == UsageStatus.IN_PROGRESS:
        if len(_record_keys) >= RECORD_KEYS_MAX:
            _record_keys.clear()
        _record_keys[record_id] = values["api_key_id"]
    return record_id


def limit_checked_in_insert() -> bool:
    """True where ``record_insert_unlimited`` can be used (SQLite: no row lock to take first)."""
    return not statements().locks


def record_insert_unlimited(key_id: int, values: dict[str, Any]) -> int | None:
    """Like ``record_insert`` if the key has no credit limit; None, inserting nothing, if it has one
    or is gone. Only where ``limit_checked_in_insert()``."""
    insert = statements().insert(tuple(values))
    params = insert.params(values.values())
    params.append(key_id)
    cursor = execute(insert.sql_unlimited, params)
    return int(cursor.lastrowid) if cursor.rowcount == 1 else None


def record_for_settlement(record_id: int) -> dict[str, Any] | None:
    """Read (and on PostgreSQL lock) what settlement needs of a record."""
    reader = statements().record_for_settlement
    row = reader.one((record_id,))
    return None if row is None else dict(zip(reader.names, row, strict=True))


def record_update(record_id: int, only_status: str, values: dict[str, Any], generation_id: str | None = None) -> int:
    """UPDATE a usage record's fields (by attname) if its status is still ``only_status`` (and its
    generation id is ``generation_id`` when given); return how many rows changed (0 or 1)."""
    update = statements().update(tuple(values), generation_id is not None)
    params = update.columns.params(values.values())
    params += (record_id, str.__str__(only_status))
    if generation_id is not None:
        params.append(generation_id)
    return int(execute(update.sql, params).rowcount)


def day_add(key_id: int, day: date, requests: int, prompt_tokens: int, completion_tokens: int, cost: Decimal) -> None:
    """Add settled records to their key's day row (created when missing), in one statement."""
    s = statements()
    execute(s.day_add, s.day_columns.params((key_id, day, requests, prompt_tokens, completion_tokens, cost)))
