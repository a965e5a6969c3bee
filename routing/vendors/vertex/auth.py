"""OAuth2 bearer tokens for Vertex AI, from a service-account key (or a static token).

google-auth signs a JWT assertion with the key and trades it at the key file's
``token_uri`` for an access token. That exchange is blocking HTTP (``requests``), so it
runs in a worker thread. The token is kept until ``REFRESH_MARGIN`` before it expires.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any
from urllib.parse import urlsplit

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account

from routing.errors import UpstreamError
from routing.vendors.base import VendorConfig
from routing.vendors.hosts import ensure_allowed

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
REFRESH_MARGIN = 300.0  # seconds before expiry at which a cached token is replaced
_REQUIRED_KEYS = ("client_email", "private_key", "token_uri")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def service_account_credentials(info: Any) -> service_account.Credentials:
    """Return credentials for a service-account key; ``ValueError`` with one line otherwise."""
    if isinstance(info, str):
        raise ValueError("the Vertex credentials file must be a service-account JSON object")
    if not isinstance(info, dict):
        raise ValueError("the Vertex credentials file is not a service-account key (expected a JSON object)")
    if info.get("type") != "service_account":
        raise ValueError(
            f"the Vertex credentials file is not a service-account key (type is {info.get('type')!r}, "
            "expected 'service_account')"
        )
    for key in _REQUIRED_KEYS:
        if not isinstance(info.get(key), str) or not info[key]:
            raise ValueError(f"the Vertex service-account key has no '{key}'")
    token_uri = urlsplit(info["token_uri"])
    if token_uri.scheme != "https" and not (token_uri.scheme == "http" and token_uri.hostname in _LOOPBACK):
        raise ValueError("the Vertex service-account key's 'token_uri' must be an https URL")
    try:
        return service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
    except (ValueError, TypeError, IndexError):
        # The library's message may quote the key material: say only what is wrong.
        raise ValueError("the Vertex service-account key's 'private_key' is not a readable PEM RSA key") from None


class _TokenRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with a bounded timeout, no proxy variables, and the
    router's host policy (the token URI comes from the key file: the signed assertion goes there)."""

    def __init__(self, vendor_name: str, timeout: tuple[float, float]) -> None:
        session = requests.Session()
        session.trust_env = False  # like the router's own upstream client
        super().__init__(session)
        self.vendor_name = vendor_name
        self.timeout = timeout

    def __call__(
        self, url: Any, method: Any = "GET", body: Any = None, headers: Any = None, timeout: Any = None, **kwargs: Any
    ) -> Any:
        ensure_allowed(self.vendor_name, (urlsplit(str(url)).hostname or "").rstrip("."))
        return super().__call__(url, method=method, body=body, headers=headers, timeout=self.timeout, **kwargs)


class AccessTokens:
    """The bearer token of one Vertex vendor, fetched once and shared until it nears expiry.

    One refresh at a time: concurrent callers await the same in-flight refresh task (shielded,
    so a caller whose client left does not orphan a thread and start a second refresh).
    """

    def __init__(self, vendor: VendorConfig) -> None:
        self.vendor_name = vendor.name
        info = vendor.credentials.get("credentials_json")
        self._credentials = service_account_credentials(info) if info is not None else None
        self._token: str | None = None if self._credentials else vendor.credentials.get("access_token")
        self._refresh_at = float("inf") if self._token else 0.0  # monotonic seconds
        self._pending: asyncio.Task[str] | None = None
        self._request = _TokenRequest(vendor.name, (vendor.connect_timeout, max(vendor.connect_timeout, 30.0)))

    async def token(self) -> str:
        if self._token is not None and time.monotonic() < self._refresh_at:
            return self._token
        if self._credentials is None:
            raise UpstreamError(502, f"Vendor '{self.vendor_name}' has no Vertex credentials.", "vendor_auth_failed")
        if self._pending is None:
            self._pending = asyncio.create_task(self._refresh())
            self._pending.add_done_callback(self._refreshed)
        return await asyncio.shield(self._pending)

    def _refreshed(self, task: asyncio.Task[str]) -> None:
        self._pending = None
        if not task.cancelled():
            task.exception()  # retrieved here too, so a refresh nobody awaits any more logs nothing

    async def _refresh(self) -> str:
        started = time.monotonic()
        token, lifetime = await asyncio.to_thread(self._fetch)
        self._token, self._refresh_at = token, started + lifetime - REFRESH_MARGIN
        return token

    def _fetch(self) -> tuple[str, float]:
        """Trade a signed assertion for a token (blocking); return it and its lifetime in seconds."""
        assert self._credentials is not None
        try:
            self._credentials.refresh(self._request)
        except google.auth.exceptions.RefreshError as exc:
            raise self._refused(exc) from None
        except google.auth.exceptions.TransportError:
            raise UpstreamError(
                502,
                f"Could not reach the Google token endpoint for vendor '{self.vendor_name}'.",
                code="upstream_unreachable",
                retryable=True,
            ) from None
        expiry = self._credentials.expiry
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # google-auth keeps naive UTC
        lifetime = (expiry - now).total_seconds() if expiry else 3600.0
        return str(self._credentials.token), lifetime

    def _refused(self, exc: google.auth.exceptions.RefreshError) -> UpstreamError:
        detail = exc.args[1] if len(exc.args) > 1 else None
        reason = detail.get("error") if isinstance(detail, dict) else None
        return UpstreamError(
            502,
            f"Vendor '{self.vendor_name}': Google refused the service account's token request"
            + (f" ({str(reason)[:80]})." if reason else "."),
            code="vendor_auth_failed",
            retryable=bool(getattr(exc, "retryable", False)),
        )
