"""Usage reports in the browser: totals, charts and tables, one generation, CSV and JSON export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any, cast

from asgiref.sync import sync_to_async
from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from billing.models import UsageRecord, UsageStatus
from reports import charts, generations, selectors
from reports.forms import FILTER_PARAMETERS, ReportFilterForm
from routing.errors import client_attempts, client_error_message

# Rows fetched from the database per round trip, and bytes gathered before one write to the client.
CSV_FETCH_ROWS = 2000
CSV_FLUSH_BYTES = 64 * 1024


def _filter_form(request: HttpRequest) -> ReportFilterForm:
    return ReportFilterForm(request.GET, user=request.user, today=timezone.now().date())


def report_query(request: HttpRequest, *, page: bool = False, without: tuple[str, ...] = ()) -> str:
    """The report's filters from the request's query (and its generation log cursor if asked), URL-encoded.

    Only the report's own parameters travel in links, so nothing else a link was sent comes back in one;
    ``without`` leaves some out (a link that sets them itself).
    """
    names = (*FILTER_PARAMETERS, *generations.CURSOR_PARAMETERS) if page else FILTER_PARAMETERS
    query = QueryDict(mutable=True)
    for name in (n for n in names if n not in without):
        values = [v for v in request.GET.getlist(name) if v]
        if values:
            query.setlist(name, values)
    return query.urlencode()


def home(request: HttpRequest) -> HttpResponse:
    """``/``: the usage reports, through the login page for a visitor who has not logged in.

    Key owners are not staff and cannot use the admin's login, so everyone logs in at the reports' login.
    """
    usage = reverse("reports:usage")
    if request.user.is_authenticated:
        return redirect(usage)
    return redirect_to_login(usage)


def bucket_label(bucket: date) -> str:
    """A chart's label for a day (``2025-03-14``) or an hour (``2025-03-14 15:00``), UTC."""
    return f"{bucket:%Y-%m-%d %H:00}" if isinstance(bucket, datetime) else bucket.isoformat()


def _chart_data(
    first: date,
    last: date,
    summary: selectors.UsageSummary,
    known_models: list[str],
    *,
    hourly: bool = False,
) -> dict[str, Any]:
    """What usage.js draws: one series per configured model plus one for every other name, colours fixed by name."""
    daily, status = summary.daily, summary.status
    buckets = selectors.iter_hours(first, last) if hourly else selectors.iter_days(first, last)
    days = [bucket_label(b) for b in buckets]
    position = {d: i for i, d in enumerate(days)}
    series = selectors.fold_unknown_models(daily, known_models)
    models = sorted({row.model_name for row in series}, key=lambda m: (m == selectors.OTHER_MODELS, m))
    cost = {m: [0.0] * len(days) for m in models}
    tokens = {m: [0] * len(days) for m in models}
    for row in series:
        i = position[bucket_label(row.day)]
        cost[row.model_name][i] = float(row.cost)  # display only; tables show the exact Decimal
        tokens[row.model_name][i] = row.tokens
    labels = [UsageStatus(s).label for s in status]
    return {
        "days": days,
        "models": models,
        "colours": {m: charts.series_colour(m) for m in models},
        "cost": cost,
        "tokens": tokens,
        "status": {
            "labels": labels,
            "counts": list(status.values()),
            "colours": [charts.STATUS_COLOURS[label] for label in labels],
        },
        "apis": {
            "labels": [row.label for row in summary.apis],
            "counts": [row.requests for row in summary.apis],
            "colours": [charts.API_COLOURS.get(row.api, charts.OTHER_COLOUR) for row in summary.apis],
        },
        # An empty chart would draw bare axes ("0.2 tokens"): the page says "No data" instead.
        "has_cost": any(row.cost for row in series),
        "has_tokens": any(row.tokens for row in series),
        "has_requests": any(status.values()),
    }


def _model_names(form: ReportFilterForm) -> list[str]:
    """The configured models' names, from the model filter's choices (already read: no further query)."""
    choices = cast(list[tuple[str, str]], cast(forms.ChoiceField, form.fields["model"]).choices)
    return [value for value, _ in choices if value]


@login_required
def usage_report(request: HttpRequest) -> HttpResponse:
    form = _filter_form(request)
    if not form.is_valid():
        return _invalid_filter_page(request, form)
    try:
        cursors = {name: _cursor(request, name) for name in generations.CURSOR_PARAMETERS}
    except ValueError:
        form.add_error(None, "The generation log's page link is not valid: open the report again from its newest page.")
        return _invalid_filter_page(request, form)
    return _usage_page(request, form, **cursors)


def _cursor(request: HttpRequest, name: str) -> generations.Cursor | None:
    text = request.GET.get(name)
    return generations.parse_cursor(text) if text else None


def _invalid_filter_page(request: HttpRequest, form: ReportFilterForm) -> HttpResponse:
    """400 with the form and its errors at their fields (escaped), and no report: it would not match the controls."""
    return render(request, "reports/usage.html", {"form": form, "report": False}, status=400)


def _usage_page(
    request: HttpRequest,
    form: ReportFilterForm,
    *,
    before: generations.Cursor | None,
    after: generations.Cursor | None,
) -> HttpResponse:
    first, last = form.days()
    hourly = form.hourly()
    spec = form.report_filter()
    summary = selectors.usage_summary(selectors.report_sources(request.user, spec, hourly=hourly), hourly=hourly)
    totals, daily, status = summary.totals, summary.daily, summary.status
    # The generation log lists raw records (pages past the retention period's records are empty).
    records = selectors.filtered_records(request.user, spec)
    page = generations.generation_page(records, before=before, after=after)
    context = {
        "form": form,
        "report": True,
        "first_day": first,
        "last_day": last,
        "totals": totals,
        "daily": daily,
        "hourly": hourly,
        "status": [(UsageStatus(s).label, n) for s, n in status.items()],
        "apis": summary.apis,
        "chart_data": _chart_data(first, last, summary, _model_names(form), hourly=hourly),
        "page": page,
        "paged": before is not None or after is not None,
        "query": report_query(request),
        # The key and model cells link to the report narrowed to them (the other filters kept).
        "key_query": report_query(request, without=("key",)),
        "model_query": report_query(request, without=("model",)),
        "known_models": set(_model_names(form)),
        "detail_query": report_query(request, page=True),
    }
    return render(request, "reports/usage.html", context)


@login_required
def generation_detail(request: HttpRequest, generation_id: str) -> HttpResponse:
    record = (
        selectors.visible_records(request.user).select_related("api_key").filter(generation_id=generation_id).first()
    )
    if record is None:
        raise Http404("No such generation.")
    # A key owner is a client: the vendor's words (the operator's account of a failure) are for staff.
    staff = getattr(request.user, "is_staff", False)
    error_message = (
        record.error_message
        if staff
        else client_error_message(record.error_code, record.error_message, record.attempts)
    )
    attempts = record.attempts if staff else client_attempts(record.attempts)
    context = {
        "record": record,
        "error_message": error_message,
        "attempts": attempts,
        "back_query": report_query(request, page=True),
        "trace_url": trace_url(record.trace_id),
    }
    return render(request, "reports/generation.html", context)


def trace_url(trace_id: str) -> str:
    """The trace's page in the operator's trace viewer (``SIRAYA_TRACE_URL``), or "" for none."""
    template = settings.SIRAYA_TRACE_URL
    return template.replace("{trace_id}", trace_id) if template and trace_id else ""


async def _rows_in_chunks(query: QuerySet[UsageRecord, tuple[Any, ...]]) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Yield the query's rows (without their trailing pk) CSV_FETCH_ROWS at a time, each batch one query in
    Django's sync thread, so memory holds one batch and the first bytes leave at once."""
    after: tuple[Any, ...] | None = None
    while batch := await sync_to_async(selectors.csv_rows_after)(query, after, CSV_FETCH_ROWS):
        yield [row[:-1] for row in batch]
        after = batch[-1]


async def _csv_chunks(query: QuerySet[UsageRecord, tuple[Any, ...]]) -> AsyncIterator[bytes]:
    """Yield the CSV in pieces of about CSV_FLUSH_BYTES.

    Async so that daphne streams it: over ASGI, Django reads a synchronous iterator to the
    end before sending the first byte.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(selectors.CSV_COLUMNS)
    async for batch in _rows_in_chunks(query):
        writer.writerows([selectors.csv_value(v) for v in row] for row in batch)
        if buffer.tell() >= CSV_FLUSH_BYTES:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


# Text a client chose may hold "</script>": written as JSON escapes (as Django's json_script does), so the
# export stays inert even if something displays it as HTML. Still the same strings to a JSON reader.
_JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def _json_object(row: tuple[Any, ...]) -> str:
    values = (selectors.json_value(v) for v in row)
    return json.dumps(dict(zip(selectors.CSV_COLUMNS, values, strict=True))).translate(_JSON_ESCAPES)


async def _json_chunks(query: QuerySet[UsageRecord, tuple[Any, ...]]) -> AsyncIterator[bytes]:
    """Yield a JSON array of one object per row (the CSV's columns), in pieces of about CSV_FLUSH_BYTES."""
    parts = ["["]
    size = 1
    separator = ""
    async for batch in _rows_in_chunks(query):
        for row in batch:
            text = separator + _json_object(row)
            separator = ",\n"
            parts.append(text)
            size += len(text)
        if size >= CSV_FLUSH_BYTES:
            yield "".join(parts).encode()
            parts, size = [], 0
    parts.append("]\n")
    yield "".join(parts).encode()


def _export(request: HttpRequest, chunks: Any, content_type: str, extension: str) -> HttpResponseBase:
    """Stream the filtered rows through ``chunks``; the same filters and permissions as the page."""
    form = _filter_form(request)
    if not form.is_valid():
        # The errors quote what was sent: they go through the page's template, which escapes them.
        return _invalid_filter_page(request, form)
    first, last = form.days()
    records = selectors.filtered_records(request.user, form.report_filter())
    response = StreamingHttpResponse(chunks(selectors.csv_rows_query(records)), content_type=content_type)
    filename = f"usage-{first.isoformat()}-{last.isoformat()}.{extension}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


@login_required
def usage_csv(request: HttpRequest) -> HttpResponseBase:
    return _export(request, _csv_chunks, "text/csv", "csv")


@login_required
def usage_json(request: HttpRequest) -> HttpResponseBase:
    return _export(request, _json_chunks, "application/json", "json")
