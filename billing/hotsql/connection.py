"""This thread's database connection and its raw DB-API cursor, for the hot statements.

The group-commit writer pins its connection for a batch (``connection_pinned``); statements run
on the driver's own cursor (``execute``), one per connection, reused, with driver errors raised
as Django's; on PostgreSQL a cursor that prepares each statement once per connection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper


class _Thread(threading.local):
    db: BaseDatabaseWrapper | None = None
    cursor: tuple[Any, Any] | None = None
    prepared: bool = False  # the cursor's statements are prepared (PostgreSQL)


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
    # one that prepares, else Django's create_cursor (psycopg's, with the time zone of timestamps).
    prepared = conn.vendor == "postgresql" and settings.SIRAYA_DB_PREPARED
    if prepared:
        cursor = _prepared_cursor(conn)
    else:
        cursor = raw.cursor() if conn.vendor == "sqlite" else conn.create_cursor()
    _thread.cursor = (raw, cursor)
    _thread.prepared = prepared
    return cursor


# psycopg prepares a statement on request (``prepare=True``) only where the connection has a
# threshold; Django sets none. This one lets the hot statements be prepared and leaves every
# other statement unprepared, as Django meant (its cursors bind client-side and never prepare).
_NEVER_BY_COUNT = 2**62


def _prepared_cursor(conn: BaseDatabaseWrapper) -> Any:
    """PostgreSQL: a cursor that binds parameters server-side, so that each hot statement is
    parsed and planned once per connection (Django's cursors bind them into the SQL text, which
    the server parses and plans again on every execution); timestamps read in Django's zone."""
    import psycopg
    from django.db.backends.postgresql.psycopg_any import register_tzloader

    raw = conn.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = _NEVER_BY_COUNT
    cursor = psycopg.Cursor(raw)
    register_tzloader(conn.timezone, cursor)
    return cursor


def execute(sql: str, params: Sequence[Any]) -> Any:
    """Execute on the raw cursor; return it. Driver errors become Django's, as through its cursor."""
    conn = db()
    cursor = raw_cursor(conn)
    try:
        if _thread.prepared:
            cursor.execute(sql, params, prepare=True)
        else:
            cursor.execute(sql, params)
    except Exception:
        with conn.wrap_database_errors:
            raise
    return cursor
