"""The hot path's raw statements store exactly what the ORM stores, and the ORM reads it back unchanged."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import IntegrityError, connection, transaction
from django.forms.models import model_to_dict

from billing import hotsql
from billing.hotsql import connection as hot
from billing.hotsql.adapters import field_adapter
from billing.models import KeyUsageDay, UsageRecord, UsageSource, UsageStatus
from billing.services import api_key_create

CREATED = datetime(2026, 3, 31, 23, 59, 58, 123456, tzinfo=UTC)
UNTIL = datetime(2026, 4, 1, 9, 0, tzinfo=ZoneInfo("Asia/Taipei"))  # not UTC, no microseconds
FINISHED = datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)


def opened(key_id: int, generation_id: str) -> dict[str, Any]:
    return {
        "generation_id": generation_id,
        "api_key_id": key_id,
        "model_name": "acme/m",
        "status": UsageStatus.IN_PROGRESS,
        "streamed": True,
        "input_price": Decimal("1.250000"),
        "output_price": Decimal("10"),
        "cached_input_price": Decimal("0.125"),
        "reasoning_price": Decimal("0"),
        "request_price": Decimal("0.001000"),
        "reserved_cost": Decimal("0.00123456"),
        "reserved_until": UNTIL,
        "created_at": CREATED,
        "instance_id": "abc123",
    }


SETTLED: dict[str, Any] = {
    "status": UsageStatus.COMPLETED,
    "http_status": 200,
    "error_code": "",
    "error_message": "Ünïcode — and \"quotes\" 'too'",
    "finish_reason": "stop",
    "prompt_tokens": 17,
    "completion_tokens": 4,
    "cached_tokens": 0,
    "reasoning_tokens": 0,
    "usage_source": UsageSource.MIXED,
    "vendor_prompt_tokens": 17,
    "vendor_completion_tokens": None,
    "tokens_delivered": 4,
    "cost": Decimal("0.00106125"),
    "reserved_cost": Decimal("0"),
    "reserved_until": None,
    "first_token_ms": 12,
    "duration_ms": 345,
    "finished_at": FINISHED,
    "vendor_name": "acme",
    "upstream_model": "m-2026",
    "attempts": [{"vendor": "acmé", "status": "ok", "ms": 12.5, "error": None}, {"n": [1, 2]}],
}


def stored(record_id: int) -> dict[str, Any]:
    """The record's columns as the database holds them (no ORM conversion)."""
    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE id = %s", [record_id])
        row = cursor.fetchone()
        names = [column[0] for column in cursor.description]
    return {name: value for name, value in zip(names, row, strict=True) if name not in ("id", "generation_id")}


def read(record_id: int) -> dict[str, Any]:
    values = model_to_dict(UsageRecord.objects.get(pk=record_id))
    return {name: value for name, value in values.items() if name not in ("id", "generation_id")}


def test_opened_and_settled_record_is_stored_as_the_orm_stores_it(db):
    key, _ = api_key_create("k")
    by_orm = UsageRecord.objects.create(**opened(key.pk, "gen-orm"))
    by_hot = hotsql.record_insert(opened(key.pk, "gen-hot"))
    assert stored(by_hot) == stored(by_orm.pk)
    assert read(by_hot) == read(by_orm.pk)

    UsageRecord.objects.filter(pk=by_orm.pk).update(**SETTLED)
    changed = hotsql.record_update(by_hot, UsageStatus.IN_PROGRESS, SETTLED, "gen-hot")
    assert changed == 1
    assert stored(by_hot) == stored(by_orm.pk)
    assert read(by_hot) == read(by_orm.pk)
    assert read(by_hot)["attempts"] == SETTLED["attempts"]
    assert read(by_hot)["reserved_until"] is None


def test_update_is_guarded_by_status_and_generation(db):
    key, _ = api_key_create("k")
    record_id = hotsql.record_insert(opened(key.pk, "gen-1"))
    assert hotsql.record_update(record_id, UsageStatus.IN_PROGRESS, {"prompt_tokens": 1}, "gen-other") == 0
    assert hotsql.record_update(record_id, UsageStatus.COMPLETED, {"prompt_tokens": 1}) == 0
    assert hotsql.record_update(record_id, UsageStatus.IN_PROGRESS, {"prompt_tokens": 1}, "gen-1") == 1
    assert UsageRecord.objects.get(pk=record_id).prompt_tokens == 1


@pytest.mark.parametrize(
    "value",
    [
        CREATED,
        UNTIL,
        FINISHED.replace(microsecond=0),
        None,
        Decimal("1.5"),
        Decimal("0.00000001"),
        7,
        True,
        "",
        "7",
        UsageStatus.ERROR,
        [],
        [{"a": "é", "b": [1.5, None]}],
        {"k": "v"},
    ],
)
def test_adapters_prepare_values_as_the_fields_do(db, value):
    conn = hot.db()
    for field in UsageRecord._meta.concrete_fields:
        passed, adapt = field_adapter(field, conn)
        try:
            expected = field.get_db_prep_save(value, conn)
        except Exception as exc:
            if type(value) not in passed:
                with pytest.raises(type(exc)):
                    adapt(value)
            assert type(value) not in passed, f"{field.name} would store what Django refuses"
            continue
        got = value if type(value) in passed else adapt(value)
        assert bound(got) == bound(expected), field.name


def bound(value: Any) -> tuple[Any, Any]:
    """What the driver binds for a prepared value.

    sqlite3 applies its registered adapters (Django's: Decimal to str) and binds a bool as an
    int and a str subclass as its text. psycopg's Jsonb wrapper compares by identity (its object
    is compared), and its Int2/Int4/Int8 (Django's on PostgreSQL) bind what a plain int does.
    """
    if connection.vendor == "sqlite":
        adapt = sqlite3.adapters.get((type(value), sqlite3.PrepareProtocol))
        if adapt is not None:
            value = adapt(value)
        if isinstance(value, bool):
            return int, int(value)
    kind = type(value).__name__
    if kind == "Jsonb":
        return kind, value.obj
    if kind in ("Int2", "Int4", "Int8"):
        return int, int(value)
    if isinstance(value, str):
        return str, str.__str__(value)
    return type(value), value


def test_day_adapter_prepares_dates_as_the_field_does(db):
    conn = hot.db()
    field = KeyUsageDay._meta.get_field("day")
    _, adapt = field_adapter(field, conn)
    assert adapt(date(2026, 3, 1)) == field.get_db_prep_save(date(2026, 3, 1), conn)


def test_insert_unlimited_inserts_only_for_a_key_without_limit(db):
    if not hotsql.limit_checked_in_insert():
        pytest.skip("the database locks the key's row instead")
    free, _ = api_key_create("free")
    limited, _ = api_key_create("limited", credit_limit=Decimal("1"))
    assert hotsql.record_insert_unlimited(free.pk, opened(free.pk, "gen-free")) is not None
    assert hotsql.record_insert_unlimited(limited.pk, opened(limited.pk, "gen-limited")) is None
    assert list(UsageRecord.objects.values_list("generation_id", flat=True)) == ["gen-free"]


def test_driver_errors_are_djangos_and_roll_back_the_atomic_block(db):
    key, _ = api_key_create("k")
    hotsql.record_insert(opened(key.pk, "gen-dup"))
    with pytest.raises(IntegrityError), transaction.atomic():
        hotsql.record_insert(opened(key.pk, "gen-new"))
        hotsql.record_insert(opened(key.pk, "gen-dup"))  # generation_id is unique
    assert list(UsageRecord.objects.values_list("generation_id", flat=True)) == ["gen-dup"]


def _prepared_statements() -> dict[str, tuple[str, int]]:
    """The statements prepared on this thread's connection: by name, their SQL's start and runs."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, statement, generic_plans + custom_plans FROM pg_prepared_statements")
        return {name: (statement.split(" (")[0], runs) for name, statement, runs in cursor.fetchall()}


@pytest.mark.parametrize("prepared", [True, False])
def test_postgresql_prepares_the_hot_statements_once_and_nothing_else(db, settings, monkeypatch, prepared):
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    settings.SIRAYA_DB_PREPARED = prepared
    monkeypatch.setattr(hot._thread, "cursor", None)  # a cursor made under this setting
    key, _ = api_key_create("k")
    before = _prepared_statements()
    for n in range(3):
        hotsql.record_insert(opened(key.pk, f"gen-{n}"))
        list(UsageRecord.objects.filter(api_key=key))  # the ORM's statements are never prepared
    ran = [(sql, runs - before.get(name, (sql, 0))[1]) for name, (sql, runs) in _prepared_statements().items()]
    expected = [(f'INSERT INTO "{UsageRecord._meta.db_table}"', 3)] if prepared else []
    assert [(sql, runs) for sql, runs in ran if runs] == expected
    assert UsageRecord.objects.filter(api_key=key).count() == 3
