"""Vendor adapters by kind. Adding a vendor: one module and one line here."""

from __future__ import annotations

from routing.vendors.azure import AzureAdapter
from routing.vendors.base import VendorAdapter, VendorConfig
from routing.vendors.bedrock import BedrockAdapter
from routing.vendors.byteplus import BytePlusAdapter
from routing.vendors.demo import DemoAdapter
from routing.vendors.onerouter import OneRouterAdapter
from routing.vendors.openai import OpenAIAdapter
from routing.vendors.vertex import VertexAdapter

ADAPTERS: dict[str, type[VendorAdapter]] = {
    BedrockAdapter.kind: BedrockAdapter,
    DemoAdapter.kind: DemoAdapter,
    OpenAIAdapter.kind: OpenAIAdapter,
    VertexAdapter.kind: VertexAdapter,
    AzureAdapter.kind: AzureAdapter,
    BytePlusAdapter.kind: BytePlusAdapter,
    OneRouterAdapter.kind: OneRouterAdapter,
}

_instances: dict[tuple[int, str], VendorAdapter] = {}


def adapter_class(kind: str) -> type[VendorAdapter]:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown vendor kind '{kind}' (known: {', '.join(sorted(ADAPTERS))})") from None


def adapter_for(vendor: VendorConfig) -> VendorAdapter:
    """Return the adapter for ``vendor``, reused while its configuration is unchanged."""
    # repr() of the config leaves credentials out; they are part of the key all the same.
    key = (vendor.id, repr(vendor) + repr(vendor.credentials))
    adapter = _instances.get(key)
    if adapter is None:
        adapter = adapter_class(vendor.kind)(vendor)
        _instances[key] = adapter
    return adapter
