"""Where vendor requests may go: ``SIRAYA_VENDOR_HOSTS`` and, in production, no internal addresses.

Checked when a vendor is saved (admin, ``manage.py vendor``: every destination its adapter
declares, names resolved to catch internal addresses) and again before each request leaves
(API calls, Entra and Google token requests), so a vendor saved before the allowlist was set,
or a token URI inside a service-account key, cannot carry credentials elsewhere. In
production the upstream transport also checks what a name resolves to when it connects
(``resolved_refusal``), so a name whose DNS later points inside is refused too.
"""

from __future__ import annotations

import functools
import logging

from django.conf import settings

from lib.hosts import HostPolicy, resolve, url_host
from routing.errors import UpstreamError

logger = logging.getLogger(__name__)
# Seconds a save waits for DNS when checking whether a name resolves to an internal address.
RESOLVE_TIMEOUT = 2.0


def policy() -> HostPolicy:
    return _policy(tuple(settings.SIRAYA_VENDOR_HOSTS), bool(settings.SIRAYA_VENDOR_REFUSE_INTERNAL))


@functools.lru_cache(maxsize=16)
def _policy(patterns: tuple[str, ...], refuse_internal: bool) -> HostPolicy:
    return HostPolicy(patterns, refuse_internal)


def url_refusal(url: str, *, resolve_names: bool = False) -> str | None:
    """Return why requests to ``url`` are refused (``None``: allowed); at save time names are resolved."""
    rules = policy()
    host = url_host(url)
    addresses = resolve(host, RESOLVE_TIMEOUT) if resolve_names and rules.refuse_internal and host else []
    return rules.refusal(host, addresses)


@functools.lru_cache(maxsize=1024)
def _host_refusal(rules: HostPolicy, host: str) -> str | None:
    return rules.refusal(host)


def resolved_refusal(host: str, addresses: list[str]) -> str | None:
    """Why the upstream transport must not connect to ``host`` now that it resolved to ``addresses`` (production)."""
    rules = policy()
    return rules.refusal(host, addresses) if rules.refuse_internal else None


def ensure_allowed(vendor_name: str, host: str) -> None:
    """Raise the router's 502 before anything is sent to ``host`` when the policy refuses it.

    The client's message names the vendor, never the host; the log names both.
    """
    reason = _host_refusal(policy(), host.lower())
    if reason is None:
        return
    logger.warning("vendor %s: request not sent: %s", vendor_name, reason)
    raise UpstreamError(
        502,
        f"Vendor '{vendor_name}' is configured with an address this router does not send requests to.",
        code="vendor_host_refused",
        retryable=True,
    )
