"""The hot statements' SQL, built once per database vendor from the models' metadata.

``statements()`` returns them for the current connection's vendor, in its driver's paramstyle:
the key and record reads (``Reader``), the record INSERTs and UPDATEs for each set of fields
(``Insert``, ``Update``), the key's last use and the key's day upsert.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model

from billing.hotsql.adapters import Columns, literal
from billing.hotsql.connection import db, execute
from billing.models import ApiKey, KeyUsageDay, UsageRecord

Converter = Callable[[Any, Any, Any], Any]


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return field


class Reader:
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
        conn = db()
        row = execute(self.sql, params).fetchone()
        if row is None:
            return None
        values = list(row)
        for i, converters, col in self.converters:
            for convert in converters:
                values[i] = convert(values[i], col, conn)
        return tuple(values)


class Insert:
    """INSERT of a usage record: ``names`` from the caller, every other column at its default."""

    def __init__(self, s: Statements, conn: BaseDatabaseWrapper, names: tuple[str, ...]) -> None:
        given = [s.record_fields[name] for name in names]
        rest = [f for f in s.record_fields.values() if f.attname not in names]
        self.columns = Columns(conn, given)
        # The models' defaults are Python-side: written into the SQL once, as literals.
        defaults = [literal(conn, f.get_db_prep_save(f.get_default(), conn)) for f in rest]
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


class Update:
    """``UPDATE usage record SET <names> WHERE id = ? AND status = ? [AND generation_id = ?]``."""

    def __init__(self, s: Statements, conn: BaseDatabaseWrapper, names: tuple[str, ...], by_generation: bool):
        fields = [s.record_fields[n] for n in names]
        sets = ", ".join(f"{s.q(f.column)} = {s.p}" for f in fields)
        self.sql = f"UPDATE {s.record_table} SET {sets} WHERE {s.q('id')} = {s.p} AND {s.q('status')} = {s.p}"
        if by_generation:
            self.sql += f" AND {s.q('generation_id')} = {s.p}"
        self.columns = Columns(conn, fields)


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
        self.key_lock = Reader(conn, ApiKey, ["credit_limit", "limit_reset"], f"{pk} = {p}", no_key)
        self.key_of_record = (
            f"SELECT {key_table}.{pk} FROM {key_table} INNER JOIN {record_table} "
            f"ON {key_table}.{pk} = {record_table}.{q('api_key_id')} WHERE {record_table}.{pk} = {p}"
            f"{' ' + ops.for_update_sql(of=(key_table,), no_key=True) if no_key else lock}"
        )
        self.record_for_settlement = Reader(
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
        self.last_used_columns = Columns(conn, [last_used])
        self._inserts: dict[tuple[str, ...], Insert] = {}
        self._updates: dict[tuple[tuple[str, ...], bool], Update] = {}

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
        self.day_columns = Columns(conn, [_field(KeyUsageDay, n) for n in names])

    def insert(self, names: tuple[str, ...]) -> Insert:
        found = self._inserts.get(names)
        if found is None:
            found = self._inserts[names] = Insert(self, db(), names)
        return found

    def update(self, names: tuple[str, ...], by_generation: bool) -> Update:
        found = self._updates.get((names, by_generation))
        if found is None:
            found = self._updates[names, by_generation] = Update(self, db(), names, by_generation)
        return found


_statements: dict[str, Statements] = {}


def statements() -> Statements:
    """The statements for the current connection's vendor (built on first use)."""
    conn = db()
    found = _statements.get(conn.vendor)
    if found is None:
        found = _statements[conn.vendor] = Statements(conn)
    return found
