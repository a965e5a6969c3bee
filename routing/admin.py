"""Admin for vendors (kind-specific fields, write-only credentials, connection test) and models."""

from __future__ import annotations

import sys
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html

from lib import numbers
from lib.links import usage_url
from routing import services
from routing.admin_forms import OPTION_PREFIX, SECRET_PREFIX, vendor_form_for
from routing.models import Deployment, ModelMode, RouterModel, Vendor, VendorKind
from routing.probe import vendor_probe
from routing.vendors import ADAPTERS
from routing.vendors.base import VendorAdapter

TIMEOUT_FIELDS = ["connect_timeout", "first_byte_timeout", "idle_timeout"]


def _kind_label(kind: str) -> str:
    return VendorKind(kind).label if kind in VendorKind.values else kind


def _about(adapter: type[VendorAdapter]) -> str:
    """The first paragraph of the adapter's module docstring."""
    doc = sys.modules[adapter.__module__].__doc__ or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


@admin.register(Vendor)
class VendorAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "base_url", "enabled", "credentials_state", "deployment_count"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "base_url"]
    actions = ["test_connection", "enable_vendors", "disable_vendors"]
    readonly_fields = ["kind_display", "credentials_state"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Vendor]:
        return super().get_queryset(request).annotate(deployment_total=Count("deployments"))

    class Media:
        js = ["routing/vendor_form.js"]  # a new kind chosen on the add form loads that kind's form

    def _kind(self, request: HttpRequest, obj: Vendor | None) -> str:
        if obj is not None:
            return obj.kind
        posted = request.POST.get("kind", "") if request.method == "POST" else ""
        return posted if posted in ADAPTERS else request.GET.get("kind", "")

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        if request.GET.get("kind") not in ADAPTERS:
            return self._choose_kind(request)
        return super().add_view(request, form_url, extra_context)

    def _choose_kind(self, request: HttpRequest) -> HttpResponse:
        """First step of adding a vendor: its kind decides which fields the form has."""
        kinds = [(kind, _kind_label(kind), _about(adapter)) for kind, adapter in ADAPTERS.items()]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Add vendor: choose its kind",
            "kinds": kinds,
        }
        return TemplateResponse(request, "admin/routing/vendor/choose_kind.html", context)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        kwargs["form"] = vendor_form_for(self._kind(request, obj))
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        kind = self._kind(request, obj)
        adapter = ADAPTERS[kind]
        kind_field = "kind" if obj is None else "kind_display"
        fieldsets: list[tuple[str | None, dict[str, Any]]] = [
            (None, {"fields": ["name", kind_field, "base_url", "enabled"]}),
        ]
        if adapter.option_names:
            options = [OPTION_PREFIX + n for n in adapter.option_names]
            fieldsets.append((f"{_kind_label(kind)} options", {"fields": options}))
        if adapter.secret_names:
            secrets = [SECRET_PREFIX + n for n in adapter.secret_names]
            if obj is not None and obj.credentials_encrypted:
                secrets.append("remove_credentials")  # offered only when there is something to remove
            fieldsets.append(("Credentials", {"fields": ["credentials_state", *secrets]}))
        fieldsets.append(("Timeouts", {"fields": TIMEOUT_FIELDS, "classes": ["collapse"]}))
        return fieldsets

    @admin.display(description="Kind")
    def kind_display(self, obj: Vendor | None) -> str:
        return _kind_label(obj.kind) if obj is not None and obj.kind else ""

    @admin.display(description="Credentials")
    def credentials_state(self, obj: Vendor | None) -> str:
        return "set" if obj is not None and obj.credentials_encrypted else "not set"

    @admin.display(description="Deployments", ordering="deployment_total")
    def deployment_count(self, obj: Vendor) -> int:
        return getattr(obj, "deployment_total", 0)

    def save_model(self, request: HttpRequest, obj: Vendor, form: Any, change: bool) -> None:
        if change:
            services.vendor_update(
                obj,
                options=form.vendor_options,
                credentials=form.typed_credentials,
                remove_credentials=form.remove_credentials,
            )
            return
        created = services.vendor_create(
            obj.name, form.kind_name, obj.base_url, form.vendor_options, form.vendor_credentials
        )
        created.enabled = obj.enabled
        for name in TIMEOUT_FIELDS:
            setattr(created, name, getattr(obj, name))
        created.save(update_fields=["enabled", *TIMEOUT_FIELDS, "updated_at"])
        obj.__dict__.update({f.attname: getattr(created, f.attname) for f in Vendor._meta.concrete_fields})
        obj._state.adding = False

    @admin.action(description="Test connection (one request, at most 1 token)", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Vendor]) -> None:
        for vendor in queryset:
            result = vendor_probe(vendor)
            self.message_user(request, result.message, messages.SUCCESS if result.ok else messages.ERROR)

    @admin.action(description="Enable selected vendors", permissions=["change"])
    def enable_vendors(self, request: HttpRequest, queryset: QuerySet[Vendor]) -> None:
        changed = queryset.exclude(enabled=True).update(enabled=True)
        self.message_user(request, f"Enabled {changed} vendor(s).", messages.SUCCESS)

    @admin.action(description="Disable selected vendors", permissions=["change"])
    def disable_vendors(self, request: HttpRequest, queryset: QuerySet[Vendor]) -> None:
        changed = queryset.exclude(enabled=False).update(enabled=False)
        self.message_user(request, f"Disabled {changed} vendor(s).", messages.SUCCESS)


class DeploymentFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        """Refuse a deployment of an embedding model on a vendor kind that serves no embeddings."""
        super().clean()
        if self.instance.mode != ModelMode.EMBEDDING:
            return
        for form in self.forms:
            vendor = (form.cleaned_data or {}).get("vendor")
            if vendor is None or form.cleaned_data.get("DELETE"):
                continue
            adapter = ADAPTERS.get(vendor.kind)
            if adapter is None or not adapter.serves_embeddings:
                raise ValidationError(f"Vendor '{vendor.name}' serves no embeddings: an embedding model cannot use it.")


class DeploymentInline(admin.TabularInline):
    model = Deployment
    formset = DeploymentFormSet
    extra = 1
    fields = ["vendor", "upstream_model", "priority", "weight", "enabled"]


@admin.register(RouterModel)
class RouterModelAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "mode",
        "enabled",
        "input_price_display",
        "output_price_display",
        "cached_input_price_display",
        "request_price_display",
        "context_length_display",
        "deployment_count",
        "usage_column",
    ]
    list_filter = ["enabled", "mode", "deployments__vendor"]
    search_fields = ["name", "deployments__upstream_model"]
    actions = ["enable_models", "disable_models"]
    inlines = [DeploymentInline]
    fieldsets = [
        (None, {"fields": ["name", "mode", "enabled", "usage_link"]}),
        (
            "Prices (USD per million tokens; request price is USD per request)",
            {"fields": ["input_price", "output_price", "cached_input_price", "reasoning_price", "request_price"]},
        ),
        ("Limits and tokenizer", {"fields": ["context_length", "max_output_tokens", "encoding"]}),
    ]
    readonly_fields = ["usage_link"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RouterModel]:
        return super().get_queryset(request).annotate(deployment_total=Count("deployments", distinct=True))

    @admin.display(description="Deployments", ordering="deployment_total")
    def deployment_count(self, obj: RouterModel) -> int:
        return getattr(obj, "deployment_total", 0)

    @admin.display(description="Usage")
    def usage_link(self, obj: RouterModel) -> str:
        if obj.pk is None:
            return "No usage yet"  # a model being added
        url = usage_url(model=obj.name)
        return format_html('<a href="{}" id="model-usage">See this model\'s usage</a>', url)

    @admin.display(description="Usage")
    def usage_column(self, obj: RouterModel) -> str:
        url = usage_url(model=obj.name)
        return format_html('<a href="{}" class="usage-link">Usage</a>', url)

    # Prices are USD per million tokens (per request for the request price), in the one money format.
    @admin.display(description="Input / 1M tokens", ordering="input_price")
    def input_price_display(self, obj: RouterModel) -> str:
        return numbers.usd_html(obj.input_price)

    @admin.display(description="Output / 1M tokens", ordering="output_price")
    def output_price_display(self, obj: RouterModel) -> str:
        return numbers.usd_html(obj.output_price)

    @admin.display(description="Cached input / 1M tokens", ordering="cached_input_price", empty_value="as input")
    def cached_input_price_display(self, obj: RouterModel) -> str | None:
        return None if obj.cached_input_price is None else numbers.usd_html(obj.cached_input_price)

    @admin.display(description="Per request", ordering="request_price")
    def request_price_display(self, obj: RouterModel) -> str:
        return numbers.usd_html(obj.request_price)

    @admin.display(description="Context length", ordering="context_length", empty_value=numbers.MISSING)
    def context_length_display(self, obj: RouterModel) -> str | None:
        return None if obj.context_length is None else numbers.count(obj.context_length)

    @admin.action(description="Enable selected models", permissions=["change"])
    def enable_models(self, request: HttpRequest, queryset: QuerySet[RouterModel]) -> None:
        changed = services.models_set_enabled(list(queryset.values_list("pk", flat=True)), True)
        self.message_user(request, f"Enabled {changed} model(s).", messages.SUCCESS)

    @admin.action(description="Disable selected models", permissions=["change"])
    def disable_models(self, request: HttpRequest, queryset: QuerySet[RouterModel]) -> None:
        changed = services.models_set_enabled(list(queryset.values_list("pk", flat=True)), False)
        self.message_user(request, f"Disabled {changed} model(s).", messages.SUCCESS)
