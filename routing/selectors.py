"""Reads of the routing domain: what serves a model, and at what price; stored Responses API answers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from django.conf import settings

from billing.cost import Prices
from billing.models import UsageRecord, UsageStatus
from billing.terms import Answerer, ModelTerms
from lib import tokens
from routing.models import Deployment, ModelMode, RouterModel, StoredResponse, Vendor
from routing.vendors import adapter_class
from routing.vendors.base import VendorConfig


@dataclass(frozen=True, slots=True)
class Target:
    deployment_id: int
    upstream_model: str
    priority: int
    weight: int
    vendor: VendorConfig

    def answerer(self) -> Answerer:
        """This deployment as a usage record names it."""
        return Answerer(self.deployment_id, self.vendor.id, self.vendor.name, self.upstream_model)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRoute(ModelTerms):
    """An enabled model with its terms (what billing sees) and its enabled deployments."""

    context_length: int | None
    targets: tuple[Target, ...]
    mode: str = ModelMode.CHAT  # which APIs may ask it (``routing.routes.request_routes``)


def vendor_config(vendor: Vendor) -> VendorConfig:
    return VendorConfig(
        id=vendor.pk,
        name=vendor.name,
        kind=vendor.kind,
        base_url=vendor.base_url,
        options=dict(vendor.options or {}),
        credentials=vendor.credentials(),
        connect_timeout=vendor.connect_timeout or settings.SIRAYA_CONNECT_TIMEOUT,
        first_byte_timeout=vendor.first_byte_timeout or settings.SIRAYA_FIRST_BYTE_TIMEOUT,
        idle_timeout=vendor.idle_timeout or settings.SIRAYA_IDLE_TIMEOUT,
    )


def deployment_vendor_config(deployment: Deployment) -> VendorConfig:
    """The deployment's vendor, with the deployment's own timeouts where it sets them."""
    config = vendor_config(deployment.vendor)
    overrides = {
        name: getattr(deployment, name)
        for name in ("connect_timeout", "first_byte_timeout", "idle_timeout")
        if getattr(deployment, name)
    }
    return replace(config, **overrides) if overrides else config


def model_prices(model: RouterModel) -> Prices:
    return Prices(
        input=model.input_price,
        output=model.output_price,
        cached_input=model.cached_input_price if model.cached_input_price is not None else model.input_price,
        reasoning=model.reasoning_price if model.reasoning_price is not None else model.output_price,
        request=model.request_price or Decimal("0"),
    )


def model_route(name: str) -> ModelRoute | None:
    """Return the enabled model ``name`` with its enabled deployments, best priority first."""
    model = RouterModel.objects.filter(name=name, enabled=True).first()
    if model is None:
        return None
    deployments = (
        Deployment.objects.filter(model=model, enabled=True, vendor__enabled=True)
        .select_related("vendor")
        .order_by("priority", "id")
    )
    embedding = model.mode == ModelMode.EMBEDDING
    targets = tuple(
        Target(d.pk, d.upstream_model, d.priority, d.weight, deployment_vendor_config(d))
        for d in deployments
        # A vendor kind that serves no embeddings cannot serve an embedding model.
        if not embedding or adapter_class(d.vendor.kind).serves_embeddings
    )
    encoding = model.encoding or tokens.encoding_for(model.name, default="")
    if not encoding:
        # Count with the upstream model's family when the router name does not say.
        upstream = targets[0].upstream_model if targets else ""
        encoding = tokens.encoding_for(upstream, default=settings.SIRAYA_DEFAULT_ENCODING)
    return ModelRoute(
        model_id=model.pk,
        name=model.name,
        encoding=encoding,
        # An embedding answers with no tokens: its hold and rate charge count the input only.
        max_output_tokens=0 if embedding else model.max_output_tokens,
        context_length=model.context_length,
        prices=model_prices(model),
        targets=targets,
        mode=model.mode,
        max_tokens_bounds_reasoning=all(adapter_class(t.vendor.kind).max_tokens_counts_reasoning for t in targets),
    )


def stored_response_lookup(key_id: int, response_id: str, generation_id: str) -> tuple[StoredResponse | None, bool]:
    """Return the key's stored response of that id, and whether its request (``generation_id``) is
    still running (its usage record in progress: the response is stored just before the record is settled)."""
    if "\x00" in response_id:  # no id holds one, and PostgreSQL refuses it in a query
        return None, False
    stored = StoredResponse.objects.filter(id=response_id, api_key_id=key_id)
    found = stored.first()
    if found is not None:
        return found, False
    running = UsageRecord.objects.filter(
        api_key_id=key_id, generation_id=generation_id, status=UsageStatus.IN_PROGRESS
    ).exists()
    if not running:
        # Its request may have finished between the two reads; the response is stored before the
        # record is settled, so if it was stored, a second look finds it.
        found = stored.first()  # a new query: ``first`` does not cache
    return found, running
