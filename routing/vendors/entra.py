"""Microsoft Entra ID access tokens by the client-credentials grant, cached until shortly before expiry."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson

from routing.errors import UpstreamError
from routing.vendors import http
from routing.vendors.base import VendorConfig
from routing.vendors.hosts import ensure_allowed

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
# Seconds before expiry at which a cached token is replaced.
REFRESH_MARGIN = 120.0


class EntraTokenSource:
    """One service principal's tokens for one vendor; one refresh at a time."""

    def __init__(self, vendor: VendorConfig, authority: str, tenant_id: str, client_id: str, secret: str) -> None:
        self.vendor = vendor
        self.url = f"{authority.rstrip('/')}/{tenant_id}/oauth2/v2.0/token"
        self.form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": COGNITIVE_SERVICES_SCOPE,
        }
        self._token = ""
        self._expires_at = 0.0  # time.monotonic()
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return bool(self._token) and time.monotonic() < self._expires_at - REFRESH_MARGIN

    async def token(self) -> str:
        if self._fresh():
            return self._token
        async with self._lock:
            if not self._fresh():
                await self._refresh()
        return self._token

    async def _refresh(self) -> None:
        started = time.monotonic()
        ensure_allowed(self.vendor.name, httpx.URL(self.url).host)  # the client secret goes there
        try:
            response = await http.client().post(self.url, data=self.form, timeout=http.timeouts(self.vendor))
        except httpx.HTTPError as exc:
            raise http.transport_error(self.vendor, exc) from None
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            payload = {}
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if response.status_code != 200 or not isinstance(token, str):
            # Entra's error_description is not echoed: the client sees only that the router's credential failed.
            raise UpstreamError(
                502,
                f"Vendor '{self.vendor.name}' rejected the router's credentials: the Entra ID token request failed "
                f"(HTTP {response.status_code}); check the tenant, client id and client secret.",
                code="vendor_auth_failed",
                retryable=True,
                vendor_status=response.status_code,
            )
        self._token = token
        self._expires_at = started + float(payload.get("expires_in") or 0)
