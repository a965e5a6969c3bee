"""The admin's "test connection": one tiny request to a vendor through its adapter."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from routing.canonical import ChatRequest
from routing.errors import UpstreamError
from routing.models import Vendor
from routing.selectors import vendor_config
from routing.vendors import adapter_for, http
from routing.vendors.base import Completion, UpstreamCall, VendorConfig

PROBE_MESSAGES = [{"role": "user", "content": "Reply with one word: ok"}]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    message: str


def _scrub(text: str, config: VendorConfig) -> str:
    """Remove any credential value from ``text`` (a vendor may echo what it was sent)."""
    for value in config.credentials.values():
        secret = str(value)
        if len(secret) >= 4:
            text = text.replace(secret, "[credential]")
    return text


async def _complete(config: VendorConfig, call: UpstreamCall, seconds: float) -> Completion:
    try:
        async with asyncio.timeout(seconds):
            return await adapter_for(config).complete(call)
    finally:
        await http.close_loop_client()  # the loop ends with this call; so must its connections


def probe_model(vendor: Vendor) -> str | None:
    """The upstream model to test with: the vendor's first deployment, enabled ones first."""
    deployment = vendor.deployments.order_by("-enabled", "priority", "id").first()
    return deployment.upstream_model if deployment else None


def vendor_probe(vendor: Vendor) -> ProbeResult:
    """Send one request of at most one completion token to ``vendor``; report how it went, without secrets.

    Runs its own event loop: call it from synchronous code (an admin action runs in a worker thread).
    """
    upstream = probe_model(vendor)
    if upstream is None:
        return ProbeResult(False, f"{vendor.name}: nothing to test with; add a model deployed on this vendor first.")
    config = vendor_config(vendor)
    request = ChatRequest(
        model=upstream,
        messages=PROBE_MESSAGES,
        stream=False,
        include_usage=False,
        max_tokens=1,
        params={"max_tokens": 1},
    )
    call = UpstreamCall(request=request, upstream_model=upstream, generation_id="gen-connection-test")
    timeout = config.connect_timeout + config.first_byte_timeout
    started = time.monotonic()
    try:
        completion = asyncio.run(_complete(config, call, timeout))
    except UpstreamError as error:
        return ProbeResult(
            False,
            _scrub(
                f"{vendor.name}: {upstream} failed: {http.vendor_text(error.detail, config)}",
                config,
            ),
        )
    except TimeoutError:
        return ProbeResult(False, f"{vendor.name}: {upstream} did not answer within {timeout:.0f} s.")
    except Exception as error:  # any adapter failure is the outcome to report, not a crash of the admin page
        return ProbeResult(False, _scrub(f"{vendor.name}: {upstream} failed: {type(error).__name__}: {error}", config))
    elapsed_ms = (time.monotonic() - started) * 1000
    usage = completion.usage
    tokens = f", {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens" if usage else ""
    return ProbeResult(True, f"{vendor.name}: {upstream} answered in {elapsed_ms:.0f} ms{tokens}.")
