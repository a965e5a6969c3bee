"""The overview page: the range against the period before it, top spenders, spend per key, key budgets."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from billing import rollups
from reports import charts, overview
from reports.forms import NamedRangeForm


def _key_chart(window: overview.Window, keys: list[overview.Spender]) -> dict[str, Any]:
    """What overview.js draws: spend per day, one series per key (the biggest first), the rest as one."""
    series = overview.fold_keys(keys)
    names = [s.label for s in series]
    return {
        "days": [day.isoformat() for day in window.days],
        "series": [
            {
                # A key's name, with its prefix only where two keys share the name (the legend stays short).
                "label": f"{s.label} ({s.detail}…)" if names.count(s.label) > 1 else s.label,
                "colour": charts.OTHER_COLOUR if s.label == overview.OTHER_KEYS else charts.series_colour(s.detail),
                "spend": [float(v) for v in s.daily],  # display only; the tables show the exact Decimal
            }
            for s in series
        ],
    }


def _with_trends(spenders: list[overview.Spender]) -> list[tuple[overview.Spender, str]]:
    return [(s, overview.trend_points(s.daily)) for s in spenders[: overview.TOP]]


def _comparisons(comparison: overview.Comparison) -> list[tuple[str, str, overview.Change]]:
    return [
        ("spend", "Spend", comparison.spend),
        ("requests", "Requests", comparison.requests),
        ("tokens", "Tokens", comparison.tokens),
    ]


@login_required
def usage_overview(request: HttpRequest) -> HttpResponse:
    form = NamedRangeForm(request.GET)
    if not form.is_valid():
        return render(request, "reports/overview.html", {"form": form, "report": False}, status=400)
    now = timezone.now()
    window = overview.Window.ending(now.date(), form.day_count)
    covered = rollups.covered_until()
    rows = overview.overview_rows(request.user, window, covered)
    keys = overview.spend_by_key(rows, window, overview.key_labels(request.user))
    context = {
        "form": form,
        "report": True,
        "window": window,
        "range_label": form.label,
        "comparisons": _comparisons(overview.compare_periods(rows, window)),
        "top_tables": [
            ("Top keys by spend", "top-keys", _with_trends(keys)),
            ("Top models by spend", "top-models", _with_trends(overview.spend_by_model(rows, window))),
            ("Top vendors by spend", "top-vendors", _with_trends(overview.spend_by_vendor(rows, window))),
        ],
        "key_chart": _key_chart(window, keys),
        "budgets": overview.key_budgets(request.user, now, covered),
        "trend_width": overview.TREND_WIDTH,
        "trend_height": overview.TREND_HEIGHT,
    }
    return render(request, "reports/overview.html", context)
