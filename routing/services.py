"""Writes of the routing domain: vendors, models, deployments, stored Responses API answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction

from lib import secretbox
from lib.hosts import origin
from routing.models import Deployment, ModelMode, RouterModel, StoredResponse, Vendor, VendorKind
from routing.vendors import adapter_class, hosts


class VendorHostRefused(ValueError):
    """A place the vendor's configuration sends requests to is refused by ``SIRAYA_VENDOR_HOSTS`` or production rules."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"the vendor's requests would go where this router does not send credentials: {reason}")
        self.setting = setting  # base_url, or the option or secret that decides the address
        self.reason = reason


class VendorCredentialsRequired(ValueError):
    """The configuration moves the vendor's requests to a new origin: its stored credentials do not follow."""

    def __init__(self, setting: str, old_origin: str, new_origin: str) -> None:
        super().__init__(
            f"the vendor's requests would go to {new_origin} instead of {old_origin or 'nowhere'}: "
            "enter its credentials again (stored credentials are never sent to a new address)"
        )
        self.setting = setting
        self.old_origin = old_origin
        self.new_origin = new_origin


def _filled(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in (None, "")}


def vendor_destinations_check(kind: str, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> None:
    """Raise ``VendorHostRefused`` unless the host policy allows every place this configuration sends requests to."""
    for setting, url in adapter_class(kind).destinations(base_url, options, credentials):
        try:
            origin(url)
        except ValueError as error:
            raise VendorHostRefused(setting, str(error)) from None
        reason = hosts.url_refusal(url, resolve_names=True)
        if reason is not None:
            raise VendorHostRefused(setting, reason)


def _origins(kind: str, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> dict[str, str]:
    """Return origin (scheme, host, port) -> the setting that decides it, for each place requests go."""
    found: dict[str, str] = {}
    for setting, url in adapter_class(kind).destinations(base_url, options, credentials):
        try:
            found.setdefault(origin(url), setting)
        except ValueError:
            found.setdefault(url, setting)  # not a URL: compared as written
    return found


def vendor_credentials_resolve(
    vendor: Vendor | None,
    base_url: str,
    options: dict[str, Any],
    typed: dict[str, Any],
    *,
    remove: bool = False,
) -> dict[str, Any]:
    """Return the credentials ``vendor`` holds once saved with ``base_url`` and ``options``.

    ``typed`` holds only the values entered now; they replace stored ones of the same name.
    Stored credentials are kept unless ``remove``, or unless the new configuration sends
    requests to an origin (scheme, host and port) the saved one did not: then only typed
    credentials are kept, and none typed is ``VendorCredentialsRequired``.
    """
    typed = _filled(typed)
    if vendor is None or vendor.pk is None:
        return typed
    saved = Vendor.objects.get(pk=vendor.pk)
    stored = {} if remove or not saved.credentials_encrypted else saved.credentials()
    if not stored:
        return typed
    before = _origins(saved.kind, saved.base_url, saved.options or {}, stored)
    after = _origins(saved.kind, base_url, _filled(options), stored)
    moved = [o for o in after if o not in before]
    if moved:
        if not typed:
            setting = after[moved[0]]
            old = next((o for o, s in before.items() if s == setting), next(iter(before), ""))
            raise VendorCredentialsRequired(setting, old, moved[0])
        stored = {}
    return {**stored, **typed}


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
    options = _filled(options or {})
    credentials = _filled(credentials or {})
    adapter_class(kind).validate(base_url, options, credentials)
    vendor_destinations_check(kind, base_url, options, credentials)
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
    if fields.get("mode") == ModelMode.EMBEDDING:
        kinds = sorted({vendor.kind for vendor, *_ in deployments if not adapter_class(vendor.kind).serves_embeddings})
        if kinds:
            raise ValueError(f"vendors of kind {', '.join(kinds)} serve no embeddings")
    model = RouterModel.objects.create(
        name=name, input_price=input_price, output_price=output_price, context_length=context_length, **fields
    )
    for vendor, upstream, priority, weight in deployments:
        Deployment.objects.create(model=model, vendor=vendor, upstream_model=upstream, priority=priority, weight=weight)
    return model


@transaction.atomic
def vendor_update(
    vendor: Vendor, *, options: dict[str, Any], credentials: dict[str, Any], remove_credentials: bool = False
) -> Vendor:
    """Save ``vendor``'s edited fields (base URL, timeouts, ...) with new options, once its adapter accepted them.

    ``credentials`` are the values entered now; stored ones are kept or dropped as
    ``vendor_credentials_resolve`` decides (never kept when requests would go to a new origin).
    """
    options = _filled(options)
    credentials = vendor_credentials_resolve(vendor, vendor.base_url, options, credentials, remove=remove_credentials)
    adapter_class(vendor.kind).validate(vendor.base_url, options, credentials)
    vendor_destinations_check(vendor.kind, vendor.base_url, options, credentials)
    vendor.options = options
    vendor.set_credentials(credentials)
    vendor.full_clean(exclude=["credentials_encrypted"])
    vendor.save()
    return vendor


def models_set_enabled(model_ids: list[int], enabled: bool) -> int:
    """Enable or disable models; return how many changed."""
    return RouterModel.objects.filter(pk__in=model_ids).exclude(enabled=enabled).update(enabled=enabled)


def stored_response_save(key_id: int, response: dict[str, Any], input_items: list[dict[str, Any]]) -> StoredResponse:
    """Keep a Responses answer (``response``, the Response object the client got) for its key."""
    return StoredResponse.objects.create(
        id=response["id"],
        api_key_id=key_id,
        model_name=response["model"],
        created_at=datetime.fromtimestamp(response["created_at"], UTC),
        response=orjson.dumps(response).decode(),
        input_items=orjson.dumps(input_items).decode(),
    )


def stored_response_delete(key_id: int, response_id: str) -> bool:
    """Delete the key's stored response; False when the key has none of that id."""
    deleted, _ = StoredResponse.objects.filter(id=response_id, api_key_id=key_id).delete()
    return deleted > 0


def stored_responses_prune(now: datetime, days: int) -> tuple[int, datetime]:
    """Delete the responses stored more than ``days`` days before ``now``; return how many, and the cut-off."""
    if days < 0:
        raise ValueError("the retention must not be negative")
    before = now - timedelta(days=days)
    deleted, _ = StoredResponse.objects.filter(created_at__lt=before).delete()
    return deleted, before
