"""Admin for usage records: read-only, searchable by generation ID, key or model, counted only up to a cap."""

from __future__ import annotations

from functools import cached_property
from typing import Any, cast

from django import forms
from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from billing.attempts import attempts_table
from billing.models import ApiKey, UsageRecord
from lib import numbers


class CappedCountPaginator(Paginator):
    """Counts at most ``CAP + 1`` rows (``COUNT(*)`` over a ``LIMIT`` subquery), never the whole table.

    Pages past the cap stay reachable with ``?p=``; the changelist says "more than CAP".
    """

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return cast(QuerySet[Any], self.object_list)[: self.CAP + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > self.CAP


# Key or model names one search word may match and still be looked up as a list of values.
SEARCH_NAMES = 500


class UsageRecordForm(forms.ModelForm):
    """Only names the record's fields for people: the admin shows every field read-only."""

    class Meta:
        model = UsageRecord
        fields: list[str] = []
        labels = {
            "generation_id": "Generation ID",
            "trace_id": "Trace ID",
            "api": "Client API",
            "api_key": "API key",
            "model_name": "Model",
            "vendor_name": "Vendor",
            "upstream_model": "Upstream model",
            "streamed": "Streamed",
            "http_status": "HTTP status",
            "error_code": "Error code",
            "error_message": "Error message",
            "finish_reason": "Finish reason",
            "usage_source": "Counted by",
            "vendor_prompt_tokens": "Prompt tokens, as the vendor reported",
            "vendor_completion_tokens": "Completion tokens, as the vendor reported",
            "tokens_delivered": "Completion tokens delivered to the client",
            "checkpoint_at": "Last delivery checkpoint",
            "instance_id": "Router process",
            "input_price": "Input price (USD per million tokens)",
            "output_price": "Output price (USD per million tokens)",
            "cached_input_price": "Cached input price (USD per million tokens)",
            "reasoning_price": "Reasoning price (USD per million tokens)",
            "request_price": "Price per request (USD)",
            "cost": "Cost (USD)",
            "reserved_cost": "Held against the credit limit (USD)",
            "reserved_until": "Hold expires",
            "created_at": "Started",
            "finished_at": "Finished",
        }


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    # Few, narrow columns (timing is on each record's page): with the admin's navigation and the
    # filters beside it, the list fits 1400 px, cost included (reports/tests/test_admin_browser.py).
    list_display = ["started", "generation", "key", "requested_model", "status", "tokens", "cost_usd"]
    list_select_related = ["api_key"]
    list_filter = ["status", "api", "streamed", "api_key", "model", "vendor"]
    search_fields = ["generation_id"]  # get_search_results: an id's start, a key's name, a model
    search_help_text = "A generation ID or its start, a key's name, or a model."
    date_hierarchy = "created_at"
    paginator = CappedCountPaginator
    show_full_result_count = False  # no second, unfiltered COUNT(*)
    list_per_page = 100
    ordering = ["-created_at", "-pk"]
    form = UsageRecordForm
    fieldsets = [
        (
            "Request",
            {
                "fields": [
                    "generation_id",
                    "trace_id",
                    "api_key",
                    "api",
                    "model_name",
                    "status",
                    "streamed",
                    "finish_reason",
                ]
            },
        ),
        (
            "Tokens",
            {
                "fields": [
                    "prompt_tokens",
                    "completion_tokens",
                    "cached_tokens",
                    "reasoning_tokens",
                    "usage_source",
                    "vendor_prompt_tokens",
                    "vendor_completion_tokens",
                    "tokens_delivered",
                ]
            },
        ),
        (
            "Cost",
            {
                "fields": [
                    "cost",
                    "input_price",
                    "output_price",
                    "cached_input_price",
                    "reasoning_price",
                    "request_price",
                    "reserved_cost",
                    "reserved_until",
                ]
            },
        ),
        ("Timing", {"fields": ["created_at", "time_to_first_token", "duration", "finished_at"]}),
        ("Vendor and attempts", {"fields": ["vendor_name", "upstream_model", "deployment", "attempts_table"]}),
        ("Errors", {"fields": ["http_status", "error_code", "error_message"]}),
        ("Process", {"fields": ["instance_id", "checkpoint_at"], "classes": ["collapse"]}),
    ]
    readonly_fields = ["time_to_first_token", "duration", "attempts_table"]

    class Media:
        css = {"all": ["billing/usage_admin.css"]}  # numbers right-aligned: classes, as the CSP allows no style=

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[UsageRecord], search_term: str
    ) -> tuple[QuerySet[UsageRecord], bool]:
        """Match each word as a generation ID's start, a key's name or a model; every word must match.

        Each alternative is an indexed lookup on the usage table (``generation_id`` prefix, key
        ids, model names): key and model names are looked up first in their own small tables.
        A word that names more than ``SEARCH_NAMES`` keys or models is matched by a subquery
        instead: still right, only slower.
        """
        # The router's models, reached through the relation: billing does not import routing.
        router_model = cast(type[Model], UsageRecord._meta.get_field("model").related_model)
        for term in search_term.split():
            keys = ApiKey.objects.filter(name__icontains=term).values_list("pk", flat=True)
            models = router_model._default_manager.filter(name__icontains=term).values_list("name", flat=True)
            queryset = queryset.filter(
                Q(generation_id__startswith=term)
                | Q(api_key_id__in=_listed(keys, SEARCH_NAMES))
                | Q(model_name=term)
                | Q(model_name__in=_listed(models, SEARCH_NAMES))
            )
        return queryset, False

    @admin.display(description="Started (UTC)", ordering="created_at")
    def started(self, obj: UsageRecord) -> str:
        return obj.created_at.strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="Generation ID", ordering="generation_id")
    def generation(self, obj: UsageRecord) -> str:
        return obj.generation_id

    @admin.display(description="API key", ordering="api_key__name")
    def key(self, obj: UsageRecord) -> str:
        return obj.api_key.name

    @admin.display(description="Model / API", ordering="model_name")
    def requested_model(self, obj: UsageRecord) -> str:
        # The API under the model, not a column of its own: the list fits 1400 px (the record's page names it).
        return format_html('{}<br><span class="client-api">{}</span>', obj.model_name, obj.get_api_display())

    @admin.display(description="Tokens (in / out)")
    def tokens(self, obj: UsageRecord) -> str:
        return f"{numbers.count(obj.prompt_tokens)} / {numbers.count(obj.completion_tokens)}"

    @admin.display(description="Duration", ordering="duration_ms")
    def duration(self, obj: UsageRecord) -> str | None:
        return _milliseconds(obj.duration_ms)

    @admin.display(description="Time to first token")
    def time_to_first_token(self, obj: UsageRecord) -> str | None:
        return _milliseconds(obj.first_token_ms)

    @admin.display(description="Attempts")
    def attempts_table(self, obj: UsageRecord) -> str:
        return attempts_table(obj.attempts)

    @admin.display(description="Cost", ordering="cost")
    def cost_usd(self, obj: UsageRecord) -> str:
        return numbers.usd_html(obj.cost)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # usage is the billing record


def _listed(values: QuerySet[Any, Any], limit: int) -> QuerySet[Any, Any] | list[Any]:
    """Return ``values`` as a list when there are at most ``limit`` of them (one query), else as a subquery."""
    listed = list(values[: limit + 1])
    return listed if len(listed) <= limit else values


def _milliseconds(value: int | None) -> str | None:
    return None if value is None else f"{value:,} ms"  # None: the admin's empty-value mark
