"""The relay's per-request statements as SQL built once per database vendor.

Admission and settlement run for every request, in the group-commit writer thread
(``billing.writer``), which shares the GIL with the event loop. Through the ORM each of their
statements was compiled anew (about two thirds of the router's CPU samples under load, see
the commit message); here each statement's SQL is built once from the models' metadata and
executed through Django's cursor (same connection, same transaction, same error wrapping).
Values go through the model fields' own ``get_db_prep_save`` and rows read back through the
same converters the ORM applies, so what is stored and read is what the ORM would store and
read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model

from billing.models import ApiKey, KeyUsageDay, UsageRecord

Converter = Callable[[Any, Any, Any], Any]

# Fields whose get_db_prep_save returns a value of one of _PLAIN's types unchanged (Django 5.2,
# SQLite and PostgreSQL: CharField.to_python keeps a str, IntegerField int(), BooleanField
# bool(), DecimalField Decimal() and adapt_decimalfield_value is the identity). Values of
# other types, and other fields (dates, JSON), go through get_db_prep_save.
_AS_IS = {
    "CharField",
    "TextField",
    "IntegerField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "PositiveBigIntegerField",
    "BigIntegerField",
    "SmallIntegerField",
    "BooleanField",
    "DecimalField",
    "ForeignKey",
}
_PLAIN = {int, str, bool, Decimal, type(None)}


def _db() -> BaseDatabaseWrapper:
    """The thread's connection itself (``connection`` is a proxy that looks it up on every use)."""
    return connections[DEFAULT_DB_ALIAS]


_as_is: dict[Field[Any, Any], bool] = {}


def _prep(field: Field[Any, Any], value: Any, conn: BaseDatabaseWrapper) -> Any:
    as_is = _as_is.get(field)
    if as_is is None:
        as_is = _as_is[field] = field.get_internal_type() in _AS_IS
    if as_is and type(value) in _PLAIN:
        return value
    return field.get_db_prep_save(value, conn)


class _Reader:
    """A SELECT of some fields of one model, its rows converted as the ORM would."""

    def __init__(self, model: type[Model], names: Sequence[str], where: str, lock: str) -> None:
        meta = model._meta
        q = connection.ops.quote_name
        self.names = tuple(names)
        fields = [_field(model, name) for name in names]
        columns = ", ".join(q(f.column) for f in fields)
        self.sql = f"SELECT {columns} FROM {q(meta.db_table)} WHERE {where}{lock}"
        self.converters: list[tuple[int, list[Converter], Any]] = []
        for i, field in enumerate(fields):
            col = field.get_col(meta.db_table)
            converters = [*connection.ops.get_db_converters(col), *col.get_db_converters(connection)]
            if converters:
                self.converters.append((i, converters, col))

    def one(self, params: Sequence[Any]) -> tuple[Any, ...] | None:
        conn = _db()
        with conn.cursor() as cursor:
            cursor.execute(self.sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        values = list(row)
        for i, converters, col in self.converters:
            for convert in converters:
                values[i] = convert(values[i], col, conn)
        return tuple(values)


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return field


class Statements:
    """Every hot statement for the current connection's vendor."""

    def __init__(self) -> None:
        ops, features = connection.ops, connection.features
        q = ops.quote_name
        self.vendor = connection.vendor
        # Row locks where the database has them (PostgreSQL). SQLite has none and needs none:
        # every write transaction there starts with BEGIN IMMEDIATE, which serialises them.
        self.locks = bool(features.has_select_for_update)
        no_key = " " + ops.for_update_sql(no_key=True) if self.locks and features.has_select_for_no_key_update else ""
        lock = " " + ops.for_update_sql() if self.locks else ""
        key_table, record_table, day_table = (
            q(ApiKey._meta.db_table),
            q(UsageRecord._meta.db_table),
            q(KeyUsageDay._meta.db_table),
        )
        pk = q("id")

        self.key_lock = _Reader(ApiKey, ["credit_limit", "limit_reset"], f"{pk} = %s", no_key)
        self.key_of_record = (
            f"SELECT {key_table}.{pk} FROM {key_table} INNER JOIN {record_table} "
            f"ON {key_table}.{pk} = {record_table}.{q('api_key_id')} WHERE {record_table}.{pk} = %s"
            f"{' ' + ops.for_update_sql(of=(key_table,), no_key=True) if no_key else lock}"
        )
        self.record_for_settlement = _Reader(
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
            f"{pk} = %s",
            lock,
        )
        self.last_used = f"UPDATE {key_table} SET {q('last_used_at')} = %s WHERE {pk} = %s"

        # INSERT of a usage record: every column (the models' defaults are Python-side),
        # the defaults prepared once.
        self.record_fields = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]
        self.record_index = {f.attname: i for i, f in enumerate(self.record_fields)}
        self.record_defaults = [f.get_db_prep_save(f.get_default(), connection) for f in self.record_fields]
        placeholders = ", ".join(["%s"] * len(self.record_fields))
        columns = ", ".join(q(f.column) for f in self.record_fields)
        self.record_returning = bool(features.can_return_columns_from_insert)
        self.record_insert = f"INSERT INTO {record_table} ({columns}) VALUES ({placeholders})" + (
            f" RETURNING {pk}" if self.record_returning else ""
        )
        self._record_updates: dict[tuple[str, ...], str] = {}
        self.record_table = record_table

        # A settled record's figures added to its key's day: one upsert (SQLite >= 3.24 and
        # PostgreSQL), the same arithmetic the ORM's F() update did (SQLite: NUMERIC casts).
        def numeric(expr: str) -> str:
            return f"CAST({expr} AS NUMERIC)" if self.vendor == "sqlite" else expr

        c = {name: q(_field(KeyUsageDay, name).column) for name in ("api_key", "day", "requests", "cost")}
        pt, ct = q("prompt_tokens"), q("completion_tokens")
        cost_sum = numeric(f"({day_table}.{c['cost']} + {numeric('excluded.' + c['cost'])})")
        self.day_add = (
            f"INSERT INTO {day_table} ({c['api_key']}, {c['day']}, {c['requests']}, {pt}, {ct}, {c['cost']}) "
            f"VALUES (%s, %s, 1, %s, %s, {numeric('%s')}) "
            f"ON CONFLICT ({c['api_key']}, {c['day']}) DO UPDATE SET "
            f"{c['requests']} = {day_table}.{c['requests']} + 1, "
            f"{pt} = {day_table}.{pt} + excluded.{pt}, "
            f"{ct} = {day_table}.{ct} + excluded.{ct}, "
            f"{c['cost']} = {cost_sum}"
        )
        self.day_field = _field(KeyUsageDay, "day")
        self.day_cost_field = _field(KeyUsageDay, "cost")

    def record_update_sql(self, names: Iterable[str], by_generation: bool) -> str:
        """``UPDATE usage record SET <names> WHERE id = %s AND status = %s [AND generation_id = %s]``."""
        key = (*names, str(by_generation))
        sql = self._record_updates.get(key)
        if sql is None:
            q = connection.ops.quote_name
            sets = ", ".join(f"{q(_field(UsageRecord, n).column)} = %s" for n in key[:-1])
            sql = f"UPDATE {self.record_table} SET {sets} WHERE {q('id')} = %s AND {q('status')} = %s"
            if by_generation:
                sql += f" AND {q('generation_id')} = %s"
            self._record_updates[key] = sql
        return sql


_statements: dict[str, Statements] = {}


def statements() -> Statements:
    """The statements for the current connection's vendor (built on first use)."""
    vendor = _db().vendor
    found = _statements.get(vendor)
    if found is None:
        found = _statements[vendor] = Statements()
    return found


def key_lock(key_id: int) -> tuple[Decimal | None, str]:
    """Lock the key's row (PostgreSQL: ``FOR NO KEY UPDATE``); return (credit_limit, limit_reset)."""
    row = statements().key_lock.one([key_id])
    if row is None:
        raise ApiKey.DoesNotExist(f"no API key {key_id}")
    return row[0], row[1]


def key_of_record_lock(record_id: int) -> None:
    """Lock the key of a usage record (PostgreSQL); nothing to do where there are no row locks."""
    s = statements()
    if s.locks:
        with _db().cursor() as cursor:
            cursor.execute(s.key_of_record, [record_id])
            cursor.fetchone()


def last_used_set(key_id: int, now: datetime) -> None:
    conn = _db()
    field = _field(ApiKey, "last_used_at")
    with conn.cursor() as cursor:
        cursor.execute(statements().last_used, [field.get_db_prep_save(now, conn), key_id])


def record_insert(values: dict[str, Any]) -> int:
    """INSERT one usage record (``values`` by attname, the rest at the fields' defaults); return its id."""
    s, conn = statements(), _db()
    params = list(s.record_defaults)
    fields = s.record_fields
    for name, value in values.items():
        i = s.record_index[name]
        params[i] = _prep(fields[i], value, conn)
    with conn.cursor() as cursor:
        cursor.execute(s.record_insert, params)
        if s.record_returning:
            row = cursor.fetchone()
            return int(row[0])
        return int(cursor.lastrowid)


def record_for_settlement(record_id: int) -> dict[str, Any] | None:
    """Read (and on PostgreSQL lock) what settlement needs of a record."""
    reader = statements().record_for_settlement
    row = reader.one([record_id])
    return None if row is None else dict(zip(reader.names, row, strict=True))


def record_update(record_id: int, only_status: str, values: dict[str, Any], generation_id: str | None = None) -> int:
    """UPDATE a usage record's fields (by name) if its status is still ``only_status`` (and its
    generation id is ``generation_id`` when given); return how many rows changed (0 or 1)."""
    s, conn = statements(), _db()
    params = [_prep(_field(UsageRecord, name), value, conn) for name, value in values.items()]
    params += [record_id, only_status]
    if generation_id is not None:
        params.append(generation_id)
    with conn.cursor() as cursor:
        cursor.execute(s.record_update_sql(values, generation_id is not None), params)
        return int(cursor.rowcount)


def day_add(key_id: int, day: date, prompt_tokens: int, completion_tokens: int, cost: Decimal) -> None:
    """Add one settled record to its key's day row (created when missing), in one statement."""
    s, conn = statements(), _db()
    params = [
        key_id,
        s.day_field.get_db_prep_save(day, conn),
        prompt_tokens,
        completion_tokens,
        _prep(s.day_cost_field, cost, conn),
    ]
    with conn.cursor() as cursor:
        cursor.execute(s.day_add, params)
