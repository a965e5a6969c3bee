"""Admin for API keys (plaintext shown once, at creation) and usage records (read-only)."""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Model, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing import rollups
from billing.attempts import attempts_table
from billing.models import ApiKey, UsageRecord
from billing.selectors import api_key_cache_forget
from billing.services import api_key_create, api_key_enable, api_key_revoke
from lib import numbers, secretbox
from lib.links import usage_url
from reports.selectors import api_keys_with_period_spend

# The request attribute that carries a new key's plaintext from save_model to response_add.
_PLAINTEXT_ATTR = "_siraya_new_api_key"
# The session entry that carries new keys' plaintexts ({pk: Fernet token of the plaintext}) from the
# add POST to the one page that shows each of them, which removes it: the plaintext is read once, and
# the session store (a database row, or a cookie) never holds it in clear.
_SESSION_PLAINTEXTS = "siraya_new_api_keys"


class ApiKeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked"), ("expired", "Expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        now = timezone.now()
        not_expired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        if self.value() == "active":
            return queryset.filter(not_expired, revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        return queryset


class ApiKeyCreateForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = [
            "name",
            "owner",
            "credit_limit",
            "limit_reset",
            "requests_per_minute",
            "tokens_per_minute",
            "expires_at",
        ]
        help_texts = {
            "credit_limit": "USD; leave blank for no limit.",
            "owner": "The user who may read this key's usage at /usage/.",
        }


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "display_prefix",
        "owner",
        "credit_limit_display",
        "limit_reset",
        "spend_this_period",
        "status",
        "last_used_at",
        "usage_column",
    ]
    list_select_related = ["owner"]
    list_filter = [ApiKeyStatusFilter, "limit_reset", ("owner", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "prefix", "owner__username", "owner__email"]
    actions = ["revoke_keys", "enable_keys"]

    class Media:
        css = {"all": ["billing/admin.css"]}  # status colours: classes, since the CSP allows no inline style

    readonly_fields = ["display_prefix", "status", "usage_link", "created_at", "revoked_at", "last_used_at"]
    fieldsets = [
        (None, {"fields": ["name", "owner", "display_prefix", "status", "usage_link"]}),
        ("Limits", {"fields": ["credit_limit", "limit_reset", "requests_per_minute", "tokens_per_minute"]}),
        ("Streams and expiry", {"fields": ["max_concurrent_streams", "expires_at"]}),
        ("History", {"fields": ["created_at", "last_used_at", "revoked_at"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return api_keys_with_period_spend(super().get_queryset(request), timezone.now(), rollups.covered_until())

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [(None, {"fields": ApiKeyCreateForm.Meta.fields})]
        return self.fieldsets

    @admin.display(description="Key", ordering="prefix")
    def display_prefix(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…"

    @admin.display(description="Credit limit", ordering="credit_limit", empty_value="no limit")
    def credit_limit_display(self, obj: ApiKey) -> str | None:
        return None if obj.credit_limit is None else numbers.usd_html(obj.credit_limit)

    @admin.display(description="Usage")
    def usage_link(self, obj: ApiKey) -> str:
        url = usage_url(key=obj.pk)
        return format_html('<a href="{}" id="api-key-usage">See this key\'s usage</a>', url)

    @admin.display(description="Usage")
    def usage_column(self, obj: ApiKey) -> str:
        url = usage_url(key=obj.pk)
        return format_html('<a href="{}" class="usage-link">Usage</a>', url)

    @admin.display(description="Spend this period", ordering="period_spend")
    def spend_this_period(self, obj: ApiKey) -> str:
        # SQLite sums carry float noise past the 8 stored places.
        return numbers.usd_html(Decimal(getattr(obj, "period_spend", 0)).quantize(Decimal("0.00000001")))

    @admin.display(description="Status")
    def status(self, obj: ApiKey) -> str:
        if obj.revoked_at is not None:
            label = "Revoked"
        elif obj.expires_at is not None and obj.expires_at <= timezone.now():
            label = "Expired"
        else:
            label = "Active"
        return format_html('<span class="key-status-{}">{}</span>', label.lower(), label)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            api_key_cache_forget(obj.key_hash)  # new limits apply at once in this process
            return
        created, plaintext = api_key_create(
            obj.name,
            owner=obj.owner,
            credit_limit=obj.credit_limit,
            limit_reset=obj.limit_reset,
            requests_per_minute=obj.requests_per_minute,
            tokens_per_minute=obj.tokens_per_minute,
            expires_at=obj.expires_at,
        )
        # The admin logs the addition and builds its response from ``obj``: make it the created row.
        obj.__dict__.update({f.attname: getattr(created, f.attname) for f in ApiKey._meta.concrete_fields})
        obj._state.adding = False
        setattr(request, _PLAINTEXT_ATTR, plaintext)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        """Send the browser on to the page that shows the new key once (post/redirect/get).

        A reload of that page then asks for the page again instead of posting the form again.
        """
        plaintext = getattr(request, _PLAINTEXT_ATTR, None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        sealed = secretbox.encrypt_json(settings.SIRAYA_ENCRYPTION_KEY, {"key": plaintext})
        request.session[_SESSION_PLAINTEXTS] = {**request.session.get(_SESSION_PLAINTEXTS, {}), str(obj.pk): sealed}
        return HttpResponseRedirect(reverse("admin:billing_apikey_created", args=[obj.pk]))

    def get_urls(self) -> list[URLPattern]:
        created = path(
            "<path:object_id>/created/",
            self.admin_site.admin_view(self.created_view),
            name="billing_apikey_created",
        )
        return [created, *super().get_urls()]

    def created_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Show a new key's plaintext, the first time only; later visits say it was already shown."""
        api_key = self.get_object(request, unquote(object_id))
        if api_key is None:
            raise Http404("No such API key.")
        if not self.has_view_or_change_permission(request, api_key):
            raise PermissionDenied
        sealed = dict(request.session.get(_SESSION_PLAINTEXTS, {}))
        token = sealed.pop(str(api_key.pk), None)
        plaintext = None
        if token is not None:
            request.session[_SESSION_PLAINTEXTS] = sealed
            plaintext = secretbox.decrypt_json(settings.SIRAYA_ENCRYPTION_KEY, token).get("key")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API key created" if plaintext else "API key already shown",
            "api_key": api_key,
            "plaintext": plaintext,
        }
        response = TemplateResponse(request, "admin/billing/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        now = timezone.now()
        keys = list(queryset.filter(revoked_at__isnull=True))
        for api_key in keys:
            api_key_revoke(api_key, now)
        self.message_user(request, f"Revoked {len(keys)} API key(s).", messages.SUCCESS)

    @admin.action(description="Re-enable selected API keys", permissions=["change"])
    def enable_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        keys = list(queryset.filter(revoked_at__isnull=False))
        for api_key in keys:
            api_key_enable(api_key)
        self.message_user(request, f"Re-enabled {len(keys)} API key(s).", messages.SUCCESS)


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
    list_filter = ["status", "streamed", "api_key", "model", "vendor"]
    search_fields = ["generation_id"]  # get_search_results: an id's start, a key's name, a model
    search_help_text = "A generation ID or its start, a key's name, or a model."
    date_hierarchy = "created_at"
    paginator = CappedCountPaginator
    show_full_result_count = False  # no second, unfiltered COUNT(*)
    list_per_page = 100
    ordering = ["-created_at", "-pk"]
    form = UsageRecordForm
    fieldsets = [
        ("Request", {"fields": ["generation_id", "api_key", "model_name", "status", "streamed", "finish_reason"]}),
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

    @admin.display(description="Model", ordering="model_name")
    def requested_model(self, obj: UsageRecord) -> str:
        return obj.model_name

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
