"""Admin for API keys: plaintext shown once, at creation; revoke and re-enable; spend this period."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing import rollups
from billing.models import ApiKey
from billing.selectors import api_key_cache_forget, api_keys_with_period_spend
from billing.services import api_key_create, api_key_enable, api_key_revoke
from lib import numbers, secretbox
from lib.links import usage_url

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
