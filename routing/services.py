"""Writes of the routing domain: vendors, models, deployments."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction

from lib import secretbox
from routing.models import Deployment, RouterModel, Vendor, VendorKind
from routing.vendors import adapter_class


def vendor_create(
    name: str,
    kind: str,
    base_url: str = "",
    options: dict[str, Any] | None = None,
    credentials: dict[str, Any] | None = None,
) -> Vendor:
    """Create a vendor after its adapter accepted the configuration (``ValueError`` otherwise)."""
    if kind not in VendorKind.values:
        raise ValueError(f"unknown vendor kind '{kind}' (known: {', '.join(VendorKind.values)})")
    if Vendor.objects.filter(name=name).exists():
        raise ValueError(f"a vendor named '{name}' already exists")
    options = {k: v for k, v in (options or {}).items() if v not in (None, "")}
    credentials = {k: v for k, v in (credentials or {}).items() if v not in (None, "")}
    adapter_class(kind).validate(base_url, options, credentials)
    vendor = Vendor(name=name, kind=kind, base_url=base_url, options=options)
    vendor.set_credentials(credentials)
    vendor.full_clean(exclude=["credentials_encrypted"])
    vendor.save()
    return vendor


@transaction.atomic
def vendor_credentials_rotate() -> int:
    """Re-encrypt every vendor's credentials under the first key of ``SIRAYA_ENCRYPTION_KEY``.

    Every key in the list may have encrypted them; after this only the first is needed.
    Return how many vendors were re-encrypted. One undecryptable vendor aborts all.
    """
    keys = settings.SIRAYA_ENCRYPTION_KEY
    rotated = 0
    for vendor in Vendor.objects.select_for_update().exclude(credentials_encrypted=""):
        try:
            token = secretbox.rotate(keys, vendor.credentials_encrypted)
        except secretbox.SecretBoxError:
            raise ValueError(
                f"credentials of vendor '{vendor.name}' cannot be decrypted with any key in SIRAYA_ENCRYPTION_KEY"
            ) from None
        Vendor.objects.filter(pk=vendor.pk).update(credentials_encrypted=token)
        rotated += 1
    return rotated


def vendor_disable(name: str) -> Vendor:
    vendor = Vendor.objects.get(name=name)
    vendor.enabled = False
    vendor.save(update_fields=["enabled", "updated_at"])
    return vendor


@transaction.atomic
def model_create(
    name: str,
    *,
    deployments: list[tuple[Vendor, str, int, int]],
    input_price: Decimal = Decimal("0"),
    output_price: Decimal = Decimal("0"),
    context_length: int | None = None,
    **fields: Any,
) -> RouterModel:
    """Create a model served by ``deployments`` of (vendor, upstream model, priority, weight)."""
    if RouterModel.objects.filter(name=name).exists():
        raise ValueError(f"a model named '{name}' already exists")
    if input_price < 0 or output_price < 0:
        raise ValueError("prices must not be negative")
    model = RouterModel.objects.create(
        name=name, input_price=input_price, output_price=output_price, context_length=context_length, **fields
    )
    for vendor, upstream, priority, weight in deployments:
        Deployment.objects.create(model=model, vendor=vendor, upstream_model=upstream, priority=priority, weight=weight)
    return model


def vendor_update(vendor: Vendor, *, options: dict[str, Any], credentials: dict[str, Any]) -> Vendor:
    """Save ``vendor``'s edited fields with new options and credentials, once its adapter accepted them."""
    options = {k: v for k, v in options.items() if v not in (None, "")}
    credentials = {k: v for k, v in credentials.items() if v not in (None, "")}
    adapter_class(vendor.kind).validate(vendor.base_url, options, credentials)
    vendor.options = options
    vendor.set_credentials(credentials)
    vendor.full_clean(exclude=["credentials_encrypted"])
    vendor.save()
    return vendor


def models_set_enabled(model_ids: list[int], enabled: bool) -> int:
    """Enable or disable models; return how many changed."""
    return RouterModel.objects.filter(pk__in=model_ids).exclude(enabled=enabled).update(enabled=enabled)
