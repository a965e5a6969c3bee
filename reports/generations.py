"""The generation log: one page of raw usage records, newest first, paged by a cursor rather than an offset.

A page starts just before (``before``) or just after (``after``) the (created_at, id) of a record the
page next to it showed, so a page deep into 30 days reads what the first one does, along the
``created_at`` index (or the index of the filter: key, model, status, ... with created_at), where an
OFFSET reads and drops every record newer than it. The cursor travels in the URL with the report's
filters; there are no page numbers, since numbering a page would count every record newer than it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Q, QuerySet

from billing.models import UsageRecord

PAGE_SIZE = 50
# The query parameters that hold a cursor: the page of records older than it, or newer than it.
CURSOR_PARAMETERS = ("before", "after")
# A cursor: the record's created_at in UTC to the microsecond, and its id ("20261207T101112.123456Z-42").
_CURSOR = re.compile(r"(\d{8}T\d{6}\.\d{6})Z-(\d{1,18})")
_CURSOR_TIME = "%Y%m%dT%H%M%S.%f"

Cursor = tuple[datetime, int]


def cursor_text(record: UsageRecord) -> str:
    return f"{record.created_at.astimezone(UTC):{_CURSOR_TIME}}Z-{record.pk}"


def parse_cursor(text: str) -> Cursor:
    """The (created_at, id) of a cursor; ValueError when ``text`` is not one."""
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise ValueError(f"not a generation log cursor: {text!r}")
    return datetime.strptime(match[1], _CURSOR_TIME).replace(tzinfo=UTC), int(match[2])


@dataclass(frozen=True, slots=True)
class GenerationPage:
    """The records shown (newest first) and the cursors of the pages either side (None: no such page)."""

    records: list[UsageRecord]
    newer: str | None
    older: str | None


def generation_page(
    records: QuerySet[UsageRecord], *, before: Cursor | None = None, after: Cursor | None = None, size: int = PAGE_SIZE
) -> GenerationPage:
    """The ``size`` records of ``records`` just older than ``before``, or just newer than ``after``
    (the newest without either). One query: it reads one more record to know whether another page follows."""
    records = records.select_related("api_key")
    if after is not None:
        rows = list(newer_than(records, after)[: size + 1])
        shown = rows[:size][::-1]
        more_newer = len(rows) > size
        return GenerationPage(
            shown,
            newer=cursor_text(shown[0]) if more_newer else None,
            older=cursor_text(shown[-1]) if shown else None,
        )
    rows = list(older_than(records, before)[: size + 1])
    shown = rows[:size]
    return GenerationPage(
        shown,
        newer=cursor_text(shown[0]) if before is not None and shown else None,
        older=cursor_text(shown[-1]) if len(rows) > size else None,
    )


def older_than(records: QuerySet[UsageRecord], before: Cursor | None) -> QuerySet[UsageRecord]:
    """``records`` older than the cursor ``before`` (all of them for None), newest first."""
    if before is not None:
        at, pk = before
        # created_at <= at bounds the index scan; the OR only breaks ties at that instant.
        records = records.filter(Q(created_at__lt=at) | Q(pk__lt=pk), created_at__lte=at)
    return records.order_by("-created_at", "-pk")


def newer_than(records: QuerySet[UsageRecord], after: Cursor) -> QuerySet[UsageRecord]:
    """``records`` newer than the cursor ``after``, oldest first."""
    at, pk = after
    return records.filter(Q(created_at__gt=at) | Q(pk__gt=pk), created_at__gte=at).order_by("created_at", "pk")
