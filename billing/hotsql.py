"""The relay's per-request statements as SQL built once per database vendor.

Admission and settlement run for every request, in the group-commit writer thread
(``billing.writer``), which shares the GIL with the event loop: every microsecond of Python
here is taken from the relay. So each statement's SQL is built once from the models' metadata,
in the driver's own paramstyle, and executed on the DB-API cursor of Django's connection (same
connection, same transaction), without Django's cursor wrapper: no cursor per statement, no
thread-sharing check, no ``%s`` to ``?`` regex on SQLite. Driver errors are still raised as
Django's (``IntegrityError`` ...), and a statement that fails inside ``transaction.atomic``
still rolls it back (the exception passes through it). These statements are not in
``connection.queries`` nor seen by ``execute_wrapper``.

Values are adapted as the ORM adapts them (``Field.get_db_prep_save``), by adapters built once
per field: the ORM reads back exactly what it would have written (``billing/tests/test_hotsql.py``).
Rows read back go through the ORM's own converters.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, ForeignKey, Model

from billing.models import ApiKey, KeyUsageDay, UsageRecord

Converter = Callable[[Any, Any, Any], Any]
Adapter = Callable[[Any], Any]

# Types of values that fields of each kind store as they are (Django 5.2, SQLite and PostgreSQL:
# CharField.to_python keeps a str, IntegerField int() an int, BooleanField bool() a bool,
# DecimalField Decimal() a finite Decimal, and adapt_decimalfield_value is the identity; on
# PostgreSQL Django wraps ints in psycopg's Int2/Int4/Int8, which store the same number).
# Values of other types go through the field's adapter.
Types = frozenset[type]
_NONE: Types = frozenset({type(None)})
_TEXT: Types = frozenset({str, type(None)})
_INTEGER: Types = frozenset({int, type(None)})
_INTEGER_KINDS = {
    "IntegerField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "PositiveBigIntegerField",
    "BigIntegerField",
    "SmallIntegerField",
    "AutoField",
    "BigAutoField",
    "SmallAutoField",
}


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


def _db() -> BaseDatabaseWrapper:
    """This thread's connection itself (``connection`` is a proxy that looks it up on every use)."""
    return _thread.db or connections[DEFAULT_DB_ALIAS]


def in_transaction() -> bool:
    """True inside ``transaction.atomic`` on this thread's connection."""
    return bool(_db().in_atomic_block)


def _cursor(conn: BaseDatabaseWrapper) -> Any:
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


def _execute(sql: str, params: Sequence[Any]) -> Any:
    """Execute on the raw cursor; return it. Driver errors become Django's, as through its cursor."""
    conn = _db()
    cursor = _cursor(conn)
    try:
        cursor.execute(sql, params)
    except Exception:
        with conn.wrap_database_errors:
            raise
    return cursor


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return field


def _adapter(field: Field[Any, Any], conn: BaseDatabaseWrapper) -> tuple[Types, Adapter]:
    """Return (types passed to the driver as they are, adapter of other values) for ``field``: the
    pair gives the driver what ``field.get_db_prep_save`` would.

    On SQLite the adapters also do what the sqlite3 module would do next (Decimal to str, as
    Django registers it; bool to int; a str subclass to its text): it binds int, float, str and
    None directly, and every other value costs it a failed adapter lookup (two exceptions).
    """
    kind, sqlite = field.get_internal_type(), conn.vendor == "sqlite"
    if isinstance(field, ForeignKey):
        kind = field.target_field.get_internal_type()

    def generic(value: Any) -> Any:
        return field.get_db_prep_save(value, conn)

    if kind in ("CharField", "TextField"):
        # CharField.to_python keeps any str (a TextChoices member too); drivers bind its text.
        def text(value: Any) -> Any:
            return str.__str__(value) if isinstance(value, str) else generic(value)

        return _TEXT, text
    if kind in _INTEGER_KINDS:
        return _INTEGER, generic
    if kind == "BooleanField":
        if not sqlite:
            return frozenset({bool, type(None)}), generic

        def flag(value: Any) -> Any:
            if type(value) is bool:
                return int(value)
            prepared = generic(value)
            return None if prepared is None else int(prepared)

        return _NONE, flag
    if kind == "DecimalField":
        if not sqlite:
            return frozenset({Decimal, type(None)}), generic

        def number(value: Any) -> Any:
            if type(value) is Decimal and value.is_finite():
                return str(value)
            prepared = generic(value)
            return None if prepared is None else str(prepared)

        return _NONE, number
    if kind == "DateTimeField":
        # SQLite: naive UTC text (adapt_datetimefield_value); PostgreSQL: the aware datetime itself.
        def moment(value: Any) -> Any:
            if type(value) is datetime:
                if value.tzinfo is UTC:
                    return str(value)[:-6] if sqlite else value  # str() without its "+00:00"
                if value.utcoffset() is not None:
                    return str(value.astimezone(UTC).replace(tzinfo=None)) if sqlite else value
            return generic(value)  # naive (Django warns and assumes the default time zone)

        return _NONE, moment
    if kind == "DateField":

        def day(value: Any) -> Any:
            if type(value) is date:
                return str(value) if sqlite else value
            return generic(value)

        return _NONE, day
    if kind == "JSONField" and sqlite and getattr(field, "encoder", None) is None:
        # adapt_json_value: json.dumps with the defaults (PostgreSQL wraps it in Jsonb instead).
        def document(value: Any) -> Any:
            return "[]" if type(value) is list and not value else json.dumps(value)

        return _NONE, document
    return frozenset(), generic


def _literal(conn: BaseDatabaseWrapper, value: Any) -> str:
    """Return ``value`` (as ``get_db_prep_save`` made it) as an SQL literal the database reads as
    the same value bound as a parameter (SQLite's QUOTE(); psycopg's client-side binding)."""
    if conn.vendor == "sqlite":
        return str(_execute("SELECT QUOTE(?)", [value]).fetchone()[0])
    return str(_cursor(conn).mogrify("%s", [value]))


class _Columns:
    """Values for some fields of a model, adapted as the ORM would store them."""

    def __init__(self, conn: BaseDatabaseWrapper, fields: Sequence[Field[Any, Any]]) -> None:
        pairs = [_adapter(field, conn) for field in fields]
        self.stored: list[Types] = [stored for stored, _ in pairs]
        self.adapters = [adapt for _, adapt in pairs]

    def params(self, values: Iterable[Any]) -> list[Any]:
        return [
            value if type(value) in stored else adapt(value)
            for value, stored, adapt in zip(values, self.stored, self.adapters, strict=True)
        ]


class _Reader:
    """A SELECT of some fields of one model, its rows converted as the ORM would."""

    def __init__(self, conn: BaseDatabaseWrapper, model: type[Model], names: Sequence[str], where: str, lock: str):
        meta = model._meta
        q = conn.ops.quote_name
        self.names = tuple(names)
        fields = [_field(model, name) for name in names]
        columns = ", ".join(q(f.column) for f in fields)
        self.sql = f"SELECT {columns} FROM {q(meta.db_table)} WHERE {where}{lock}"
        self.converters: list[tuple[int, list[Converter], Any]] = []
        for i, field in enumerate(fields):
            col = field.get_col(meta.db_table)
            converters = [*conn.ops.get_db_converters(col), *col.get_db_converters(conn)]
            if converters:
                self.converters.append((i, converters, col))

    def one(self, params: Sequence[Any]) -> tuple[Any, ...] | None:
        conn = _db()
        row = _execute(self.sql, params).fetchone()
        if row is None:
            return None
        values = list(row)
        for i, converters, col in self.converters:
            for convert in converters:
                values[i] = convert(values[i], col, conn)
        return tuple(values)


class _Insert:
    """INSERT of a usage record: ``names`` from the caller, every other column at its default."""

    def __init__(self, s: Statements, conn: BaseDatabaseWrapper, names: tuple[str, ...]) -> None:
        given = [s.record_fields[name] for name in names]
        rest = [f for f in s.record_fields.values() if f.attname not in names]
        self.columns = _Columns(conn, given)
        # The models' defaults are Python-side: written into the SQL once, as literals.
        defaults = [_literal(conn, f.get_db_prep_save(f.get_default(), conn)) for f in rest]
        columns = ", ".join(s.q(f.column) for f in [*given, *rest])
        values = ", ".join([s.p] * len(given) + defaults)
        self.returning = s.returning
        self.sql = f"INSERT INTO {s.record_table} ({columns}) VALUES ({values})"
        if self.returning:
            self.sql += f" RETURNING {s.q('id')}"
        # SQLite: the INSERT for a key without a credit limit, in one statement with the read
        # of the key's limit (no row, nothing inserted). PostgreSQL locks the key's row first.
        self.sql_unlimited = (
            f"INSERT INTO {s.record_table} ({columns}) SELECT {values} FROM {s.key_table} "
            f"WHERE {s.q('id')} = {s.p} AND {s.q(_field(ApiKey, 'credit_limit').column)} IS NULL"
        )

    def params(self, values: Iterable[Any]) -> list[Any]:
        return self.columns.params(values)


class _Update:
    """``UPDATE usage record SET <names> WHERE id = ? AND status = ? [AND generation_id = ?]``."""

    def __init__(self, s: Statements, conn: BaseDatabaseWrapper, names: tuple[str, ...], by_generation: bool):
        fields = [s.record_fields[n] for n in names]
        sets = ", ".join(f"{s.q(f.column)} = {s.p}" for f in fields)
        self.sql = f"UPDATE {s.record_table} SET {sets} WHERE {s.q('id')} = {s.p} AND {s.q('status')} = {s.p}"
        if by_generation:
            self.sql += f" AND {s.q('generation_id')} = {s.p}"
        self.columns = _Columns(conn, fields)


class Statements:
    """Every hot statement for one database vendor, in its driver's paramstyle."""

    def __init__(self, conn: BaseDatabaseWrapper) -> None:
        ops, features = conn.ops, conn.features
        self.q = q = ops.quote_name
        self.vendor = conn.vendor
        self.p = p = "?" if conn.vendor == "sqlite" else "%s"  # sqlite3 qmark, psycopg format
        # Row locks where the database has them (PostgreSQL). SQLite has none and needs none:
        # every write transaction there starts with BEGIN IMMEDIATE, which serialises them.
        self.locks = bool(features.has_select_for_update)
        # SQLite: a new row's id is the cursor's lastrowid (no result row to fetch).
        self.returning = self.vendor != "sqlite" and bool(features.can_return_columns_from_insert)
        no_key = " " + ops.for_update_sql(no_key=True) if self.locks and features.has_select_for_no_key_update else ""
        lock = " " + ops.for_update_sql() if self.locks else ""
        self.key_table, self.record_table, day_table = (
            q(ApiKey._meta.db_table),
            q(UsageRecord._meta.db_table),
            q(KeyUsageDay._meta.db_table),
        )
        key_table, record_table, pk = self.key_table, self.record_table, q("id")
        self.record_fields = {f.attname: f for f in UsageRecord._meta.concrete_fields if not f.primary_key}
        self.key_lock = _Reader(conn, ApiKey, ["credit_limit", "limit_reset"], f"{pk} = {p}", no_key)
        self.key_of_record = (
            f"SELECT {key_table}.{pk} FROM {key_table} INNER JOIN {record_table} "
            f"ON {key_table}.{pk} = {record_table}.{q('api_key_id')} WHERE {record_table}.{pk} = {p}"
            f"{' ' + ops.for_update_sql(of=(key_table,), no_key=True) if no_key else lock}"
        )
        self.record_for_settlement = _Reader(
            conn,
            UsageRecord,
            [
                "api_key_id",
                "model_id",
                "status",
                "cost",
                "created_at",
                "input_price",
                "output_price",
                "cached_input_price",
                "reasoning_price",
                "request_price",
            ],
            f"{pk} = {p}",
            lock,
        )
        last_used = _field(ApiKey, "last_used_at")
        self.last_used = f"UPDATE {key_table} SET {q(last_used.column)} = {p} WHERE {pk} = {p}"
        self.last_used_columns = _Columns(conn, [last_used])
        self._inserts: dict[tuple[str, ...], _Insert] = {}
        self._updates: dict[tuple[tuple[str, ...], bool], _Update] = {}

        # Settled records' figures added to their key's day: one upsert (SQLite >= 3.24 and
        # PostgreSQL), the same arithmetic the ORM's F() update did (SQLite: NUMERIC casts).
        def numeric(expr: str) -> str:
            return f"CAST({expr} AS NUMERIC)" if self.vendor == "sqlite" else expr

        c = {name: q(_field(KeyUsageDay, name).column) for name in ("api_key", "day", "requests", "cost")}
        pt, ct = q("prompt_tokens"), q("completion_tokens")
        cost_sum = numeric(f"({day_table}.{c['cost']} + {numeric('excluded.' + c['cost'])})")
        self.day_add = (
            f"INSERT INTO {day_table} ({c['api_key']}, {c['day']}, {c['requests']}, {pt}, {ct}, {c['cost']}) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {numeric(p)}) "
            f"ON CONFLICT ({c['api_key']}, {c['day']}) DO UPDATE SET "
            f"{c['requests']} = {day_table}.{c['requests']} + excluded.{c['requests']}, "
            f"{pt} = {day_table}.{pt} + excluded.{pt}, "
            f"{ct} = {day_table}.{ct} + excluded.{ct}, "
            f"{c['cost']} = {cost_sum}"
        )
        names = ("api_key", "day", "requests", "prompt_tokens", "completion_tokens", "cost")
        self.day_columns = _Columns(conn, [_field(KeyUsageDay, n) for n in names])

    def insert(self, names: tuple[str, ...]) -> _Insert:
        found = self._inserts.get(names)
        if found is None:
            found = self._inserts[names] = _Insert(self, _db(), names)
        return found

    def update(self, names: tuple[str, ...], by_generation: bool) -> _Update:
        found = self._updates.get((names, by_generation))
        if found is None:
            found = self._updates[names, by_generation] = _Update(self, _db(), names, by_generation)
        return found


_statements: dict[str, Statements] = {}


def statements() -> Statements:
    """The statements for the current connection's vendor (built on first use)."""
    conn = _db()
    found = _statements.get(conn.vendor)
    if found is None:
        found = _statements[conn.vendor] = Statements(conn)
    return found


def key_lock(key_id: int) -> tuple[Decimal | None, str]:
    """Lock the key's row (PostgreSQL: ``FOR NO KEY UPDATE``); return (credit_limit, limit_reset)."""
    row = statements().key_lock.one((key_id,))
    if row is None:
        raise ApiKey.DoesNotExist(f"no API key {key_id}")
    return row[0], row[1]


def key_of_record_lock(record_id: int) -> None:
    """Lock the key of a usage record (PostgreSQL); nothing to do where there are no row locks."""
    s = statements()
    if s.locks:
        _execute(s.key_of_record, (record_id,)).fetchone()


def last_used_set(key_id: int, now: datetime) -> None:
    s = statements()
    _execute(s.last_used, [*s.last_used_columns.params((now,)), key_id])


def record_insert(values: dict[str, Any]) -> int:
    """INSERT one usage record (``values`` by attname, the rest at the fields' defaults); return its id."""
    insert = statements().insert(tuple(values))
    cursor = _execute(insert.sql, insert.params(values.values()))
    if insert.returning:
        return int(cursor.fetchone()[0])
    return int(cursor.lastrowid)


def limit_checked_in_insert() -> bool:
    """True where ``record_insert_unlimited`` can be used (SQLite: no row lock to take first)."""
    return not statements().locks


def record_insert_unlimited(key_id: int, values: dict[str, Any]) -> int | None:
    """Like ``record_insert`` if the key has no credit limit; None, inserting nothing, if it has one
    or is gone. Only where ``limit_checked_in_insert()``."""
    insert = statements().insert(tuple(values))
    params = insert.params(values.values())
    params.append(key_id)
    cursor = _execute(insert.sql_unlimited, params)
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
    return int(_execute(update.sql, params).rowcount)


def day_add(key_id: int, day: date, requests: int, prompt_tokens: int, completion_tokens: int, cost: Decimal) -> None:
    """Add settled records to their key's day row (created when missing), in one statement."""
    s = statements()
    _execute(s.day_add, s.day_columns.params((key_id, day, requests, prompt_tokens, completion_tokens, cost)))
