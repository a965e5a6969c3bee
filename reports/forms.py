"""The report filter: a date range (UTC days), optional key, client API, model, vendor, status, error
code and generation ID prefix, and the page's auto-refresh interval."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from django import forms
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import QueryDict

from billing.models import UsageApi, UsageStatus
from reports.selectors import ReportFilter, visible_keys
from routing.models import RouterModel, Vendor

RANGES = [("today", "Today"), ("7d", "Last 7 days"), ("30d", "Last 30 days"), ("custom", "Custom")]
_RANGE_DAYS = {"today": 1, "7d": 7, "30d": 30}
# The range a report covers when the query names none.
DEFAULT_RANGE = "7d"
# The query parameters of a report: a link that keeps the report's filters carries these and no others.
FILTER_PARAMETERS = (
    "range", "start", "end", "key", "api", "model", "vendor", "status", "error_code", "generation", "refresh",
)  # fmt: skip
# Auto-refresh intervals in seconds ("" is off); usage.js reloads the page with the same query.
REFRESH_CHOICES = [("", "Off"), ("30", "Every 30 s"), ("60", "Every 60 s")]
# Longest custom range, in days: keeps the per-day chart readable.
MAX_CUSTOM_DAYS = 366
# Ranges of at most this many days are charted and tabled by hour (48 bars at most), longer ones by day.
HOURLY_MAX_DAYS = 2


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _range_days(chosen: str, today: date) -> tuple[date, date]:
    return today - timedelta(days=_RANGE_DAYS[chosen] - 1), today


def _with_shown_range(data: Any, today: date) -> QueryDict:
    """The query as the form shows it: the default range when none is named, and a named range's own days.

    The controls then always show what the page covers; start and end count only for a custom
    range (the page's script disables them otherwise, and the server ignores what was sent).
    """
    shown = QueryDict(mutable=True)
    if data:
        shown.update(data)
    chosen = shown.get("range") or DEFAULT_RANGE
    shown["range"] = chosen
    if chosen in _RANGE_DAYS:
        first, last = _range_days(chosen, today)
        shown["start"], shown["end"] = first.isoformat(), last.isoformat()
    return shown


class NamedRangeForm(forms.Form):
    """Today, the last 7 or the last 30 days (whole UTC days ending today), for the report pages
    without custom dates; bound to the default when the query names no range, so that the
    control always shows the range the page displays."""

    range = forms.ChoiceField(choices=[c for c in RANGES if c[0] in _RANGE_DAYS], label="Range")

    def __init__(self, data: QueryDict) -> None:
        shown = data.copy()
        if not shown.get("range"):
            shown["range"] = DEFAULT_RANGE
        super().__init__(shown)

    @property
    def day_count(self) -> int:
        return _RANGE_DAYS[self.cleaned_data["range"]]

    @property
    def label(self) -> str:
        return dict(RANGES)[self.cleaned_data["range"]]

    def days(self, today: date) -> tuple[date, date]:
        """First and last UTC day covered (inclusive)."""
        return today - timedelta(days=self.day_count - 1), today


class ReportFilterForm(forms.Form):
    range = forms.ChoiceField(choices=RANGES, required=False)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="UTC, inclusive")
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="UTC, inclusive")
    key = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    api = forms.ChoiceField(choices=[("", "All APIs"), *UsageApi.choices], required=False, label="API")
    model = forms.ChoiceField(required=False)
    vendor = forms.ChoiceField(required=False)
    status = forms.ChoiceField(choices=[("", "All statuses"), *UsageStatus.choices], required=False)
    # Free text: error codes are the router's own short words (``upstream_error``); an exact match.
    error_code = forms.CharField(required=False, max_length=64, label="Error code")
    generation = forms.CharField(required=False, max_length=40, label="Generation ID starts with")
    refresh = forms.ChoiceField(choices=REFRESH_CHOICES, required=False, label="Auto-refresh")

    def __init__(self, data: Any, *, user: AbstractBaseUser | AnonymousUser, today: date) -> None:
        super().__init__(_with_shown_range(data, today))
        self.today = today
        # One query per list; the choices are built once and reused for validation and rendering.
        keys = [(k.pk, f"{k.name} ({k.prefix}…)") for k in visible_keys(user).only("pk", "name", "prefix")]
        cast(forms.ChoiceField, self.fields["key"]).choices = [("", "All keys"), *keys]
        models = RouterModel.objects.order_by("name").values_list("name", flat=True)
        cast(forms.ChoiceField, self.fields["model"]).choices = [("", "All models"), *((m, m) for m in models)]
        vendors = Vendor.objects.order_by("name").values_list("name", flat=True)
        cast(forms.ChoiceField, self.fields["vendor"]).choices = [("", "All vendors"), *((v, v) for v in vendors)]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("range") != "custom":
            return data
        start, end = data.get("start"), data.get("end")
        for name in ("start", "end"):
            if data.get(name) is None and name not in self.errors:
                self.add_error(name, f"A custom range needs {'a start' if name == 'start' else 'an end'} date.")
        if start is not None and end is not None:
            if start > end:
                self.add_error("start", "The start date must not be after the end date.")
            elif (end - start).days >= MAX_CUSTOM_DAYS:
                self.add_error("end", f"A custom range covers at most {MAX_CUSTOM_DAYS} days.")
        return data

    def days(self) -> tuple[date, date]:
        """First and last UTC day covered (inclusive)."""
        data = self.cleaned_data if self.is_valid() else {}
        chosen = data.get("range") or DEFAULT_RANGE
        if chosen == "custom":
            return data["start"], data["end"]
        return _range_days(chosen, self.today)

    def report_filter(self) -> ReportFilter:
        first, last = self.days()
        data = self.cleaned_data if self.is_valid() else {}
        return ReportFilter(
            start=_midnight(first),
            end=_midnight(last + timedelta(days=1)),
            api_key_id=data.get("key"),
            model_name=data.get("model") or "",
            vendor_name=data.get("vendor") or "",
            status=data.get("status") or "",
            error_code=data.get("error_code") or "",
            generation_prefix=data.get("generation") or "",
            api=data.get("api") or "",
        )

    def hourly(self) -> bool:
        """Whether the report is drawn by UTC hour: a range of at most two days."""
        first, last = self.days()
        return (last - first).days < HOURLY_MAX_DAYS
