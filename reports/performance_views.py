"""The performance report: latency, throughput, errors, fallbacks and cooldowns per model and deployment.

Staff only: deployments, vendors and their failures are the operator's business. A key owner gets 404
(the page does not exist for them, as the admin does not), a visitor the login page.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from asgiref.sync import async_to_sync
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from billing import rollups
from reports import performance, sources
from reports.forms import NamedRangeForm


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


@login_required
def performance_report(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise Http404("No such page.")
    form = NamedRangeForm(request.GET)
    if not form.is_valid():
        return render(request, "reports/performance.html", {"form": form, "report": False}, status=400)
    first, last = form.days(timezone.now().date())
    parts = sources.split(
        _midnight(first), _midnight(last + timedelta(days=1)), sources.Filters(), rollups.covered_until()
    )
    report = performance.performance_report_of(parts)
    ids = {row.deployment_id for row in report.deployments if row.deployment_id is not None}
    cooling = async_to_sync(performance.cooling_now)(ids) if ids else set()
    performance.mark_cooling(report.deployments, cooling)
    context = {
        "form": form,
        "report": True,
        "first_day": first,
        "last_day": last,
        "models": report.models,
        "deployments": report.deployments,
        "top_error_codes": performance.TOP_ERROR_CODES,
    }
    return render(request, "reports/performance.html", context)
