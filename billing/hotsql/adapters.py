"""Values adapted for the driver as the ORM adapts them, by adapters built once per field.

``field_adapter`` gives the driver what ``Field.get_db_prep_save`` would, without its cost for
the common types; ``Columns`` applies the adapters of a statement's fields; ``literal`` writes a
prepared value into SQL. ``billing/tests/test_hotsql.py`` checks that the ORM reads back exactly
what it would have written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, ForeignKey

from billing.hotsql.connection import execute

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


def field_adapter(field: Field[Any, Any], conn: BaseDatabaseWrapper) -> tuple[Types, Adapter]:
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


def literal(conn: BaseDatabaseWrapper, value: Any) -> str:
    """Return ``value`` (as ``get_db_prep_save`` made it) as an SQL literal the database reads as
    the same value bound as a parameter (SQLite's QUOTE(); psycopg's client-side binding)."""
    if conn.vendor == "sqlite":
        return str(execute("SELECT QUOTE(?)", [value]).fetchone()[0])
    import psycopg

    with psycopg.ClientCursor(conn.connection) as cursor:  # the binding of Django's cursors
        return str(cursor.mogrify("%s", [value]))


class Columns:
    """Values for some fields of a model, adapted as the ORM would store them."""

    def __init__(self, conn: BaseDatabaseWrapper, fields: Sequence[Field[Any, Any]]) -> None:
        pairs = [field_adapter(field, conn) for field in fields]
        self.stored: list[Types] = [stored for stored, _ in pairs]
        self.adapters = [adapt for _, adapt in pairs]

    def params(self, values: Iterable[Any]) -> list[Any]:
        return [
            value if type(value) in stored else adapt(value)
            for value, stored, adapt in zip(values, self.stored, self.adapters, strict=True)
        ]
