"""This thread's database connection and its raw DB-API cursor, for the hot statements.

The group-commit writer pins its connection for a batch (``connection_pinned``); statements run
on the driver's own cursor (``execute``), one per connection, reused, with driver errors raised
as Django's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper


class _Thread(threading.local):
    db: BaseDatabaseWrapper | None = None
    cursor: tuple[Any, Any] | None = None


_thread = _Thread()


@contextlib.contextmanager
def connection_pinned(conn: BaseDatabaseWrapper) -> Iterator[None]:
    """Within: this thread's statements use ``conn`` without looking it up each time.

    For the group commit, which looks its connection up once per batch; ``conn`` must be this
    thread's ``connections[DEFAULT_DB_ALIAS]``.
    """
    _thread.db = conn
    try:
        yield
    finally:
        _thread.db = None


def db() -> BaseDatabaseWrapper:
    """This thread's connection itself (``connection`` is a proxy that looks it up on every use)."""
    return _thread.db or connections[DEFAULT_DB_ALIAS]


def in_transaction() -> bool:
    """True inside ``transaction.atomic`` on this thread's connection."""
    return bool(db().in_atomic_block)


def raw_cursor(conn: BaseDatabaseWrapper) -> Any:
    """The DB-API cursor of the thread's open connection, one per connection, reused."""
    raw = conn.connection
    if raw is None:
        conn.ensure_connection()
        raw = conn.connection
    cached = _thread.cursor
    if cached is not None and cached[0] is raw:
        return cached[1]
    # SQLite: the sqlite3 cursor itself (Django's adds the paramstyle regex); PostgreSQL:
    # Django's create_cursor, which is psycopg's and sets the time zone of timestamps read.
    cursor = raw.cursor() if conn.vendor == "sqlite" else conn.create_cursor()
    _thread.cursor = (raw, cursor)
    return cursor


def execute(sql: str, params: Sequence[Any]) -> Any:
    """Execute on the raw cursor; return it. Driver errors become Django's, as through its cursor."""
    conn = db()
    cursor = raw_cursor(conn)
    try:
        cursor.execute(sql, params)
    except Exception:
        with conn.wrap_database_errors:
            raise
    return cursor
