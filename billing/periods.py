"""Billing periods: every period starts at 00:00 UTC; weeks start on Monday."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def day_of(moment: datetime) -> date:
    """Return the UTC calendar day ``moment`` falls on."""
    return moment.astimezone(UTC).date()


def week_start(moment: datetime) -> date:
    day = day_of(moment)
    return day - timedelta(days=day.weekday())  # Monday is weekday 0


def month_start(moment: datetime) -> date:
    return day_of(moment).replace(day=1)


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def period_bounds(reset: str, moment: datetime) -> tuple[date | None, date | None]:
    """Return the first day of the period ``moment`` is in and the first day of the next one.

    ``never`` has no bounds: (None, None). The end is exclusive: the period resets at
    00:00 UTC on that day.
    """
    if reset == "daily":
        start = day_of(moment)
        return start, start + timedelta(days=1)
    if reset == "weekly":
        start = week_start(moment)
        return start, start + timedelta(days=7)
    if reset == "monthly":
        start = month_start(moment)
        return start, _next_month(start)
    return None, None


def midnight(day: date) -> datetime:
    """Return 00:00 UTC of ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
