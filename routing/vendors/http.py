"""The shared upstream HTTP client and the plumbing HTTP-based adapters have in common."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson

from lib import logs, tracing
from routing.errors import UpstreamError
from routing.vendors.base import VendorConfig
from routing.vendors.hosts import ensure_allowed, resolved_refusal
from routing.vendors.transport import UpstreamTransport

_clients: dict[int, httpx.AsyncClient] = {}
# Upper bound on an upstream error body we read to explain a failure.
MAX_ERROR_BODY = 64 * 1024
REDACTED = logs.REDACTED
RETRYABLE_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


def _transport() -> httpx.AsyncBaseTransport:
    # SIRAYA_UPSTREAM_TRANSPORT=httpx selects httpx's own transport (kept for comparisons: make bench).
    if os.environ.get("SIRAYA_UPSTREAM_TRANSPORT", "aiohttp") == "httpx":
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=30)
        return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    return UpstreamTransport(keepalive_expiry=30, address_check=resolved_refusal)


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing.

    The router never sends a vendor's cookies back (it builds every request itself), so
    httpx's client-level jar only cost a ``urllib`` request object and a cookie-policy pass
    per response: about a tenth of the event loop's samples per request in the profile.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def client() -> httpx.AsyncClient:
    """Return the process's upstream connection pool (one per event loop)."""
    loop = asyncio.get_running_loop()
    pool = _clients.get(id(loop))
    if pool is None or pool.is_closed:
        pool = httpx.AsyncClient(
            transport=_transport(),
            timeout=httpx.Timeout(60.0),
            follow_redirects=False,
            trust_env=False,
        )
        # The ``cookies`` setter would copy into a plain jar; the pool keeps this one.
        pool._cookies = _NoCookies()
        _clients[id(loop)] = pool
    return pool


@functools.lru_cache(maxsize=4096)
def parsed_url(url: str) -> httpx.URL:
    """``httpx.URL(url)``, parsed once per distinct URL (httpx parses a str URL on every request,
    about 16 us; a URL object is taken as it is)."""
    return httpx.URL(url)


def timeouts(vendor: VendorConfig) -> httpx.Timeout:
    return _timeouts(vendor.connect_timeout, vendor.first_byte_timeout, vendor.idle_timeout)


def timeout_extension(vendor: VendorConfig) -> dict[str, float | None]:
    """``timeouts(vendor).as_dict()``, the request extension httpx reads (shared, read-only)."""
    return _timeout_extension(vendor.connect_timeout, vendor.first_byte_timeout, vendor.idle_timeout)


# A router has a handful of vendors: each set of timeouts is built once, not per request.
@functools.lru_cache(maxsize=1024)
def _timeouts(connect: float, first_byte: float, idle: float) -> httpx.Timeout:
    # The relay enforces first-byte and idle gaps itself; httpx's read timeout is a backstop.
    backstop = max(first_byte, idle) + 5
    return httpx.Timeout(connect=connect, read=backstop, write=backstop, pool=connect)


@functools.lru_cache(maxsize=1024)
def _timeout_extension(connect: float, first_byte: float, idle: float) -> dict[str, float | None]:
    return _timeouts(connect, first_byte, idle).as_dict()


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def vendor_status_to_client(status: int) -> int:
    """Map a vendor's HTTP failure to the status the client sees."""
    if status in (400, 413, 422):
        return 400
    if status == 429:
        return 429
    if status in (408, 504):
        return 504
    return 502


def error_message(payload: Any) -> tuple[str, str | None]:
    """Extract (message, code) from a vendor's JSON error body, whatever its shape."""
    if isinstance(payload, list) and payload:
        payload = payload[0]
    if not isinstance(payload, dict):
        return "", None
    error = payload.get("error", payload)
    if isinstance(error, str):
        return error, None
    if not isinstance(error, dict):
        return "", None
    message = error.get("message") or payload.get("message") or ""
    code = error.get("code") or error.get("status") or error.get("type")
    return str(message)[:300], str(code) if code is not None else None


def redact_credentials(text: str, vendor: VendorConfig) -> str:
    """Remove the vendor's own credentials from text it sent (some vendors echo the key they got)."""
    for value in _secret_strings(vendor.credentials):
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def _secret_strings(credentials: dict[str, Any]) -> list[str]:
    found = []
    for value in credentials.values():
        if isinstance(value, dict):  # a service-account key: its key material, not its public fields
            value = [value.get("private_key"), value.get("private_key_id")]
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and len(item) >= 8:
                found.append(item)
    return found


def vendor_text(text: str, vendor: VendorConfig) -> str:
    """``text`` (a vendor's words) with the vendor's credentials and every secret-shaped string
    the log scrubs (router keys, bearer tokens, vendor key shapes) redacted: fit for the log,
    the usage record and the admin. Never for a client (see ``UpstreamError``)."""
    return logs.redact(redact_credentials(text, vendor))


def upstream_http_error(vendor: VendorConfig, status: int, body: bytes, headers: httpx.Headers) -> UpstreamError:
    try:
        message, code = error_message(orjson.loads(body))
    except orjson.JSONDecodeError:
        message, code = "", None
    client_status = vendor_status_to_client(status)
    prefix = f"Vendor '{vendor.name}' returned HTTP {status}"
    if status in (401, 403):
        prefix = f"Vendor '{vendor.name}' rejected the router's credentials (HTTP {status})"
        code = "vendor_auth_failed"
    text = prefix + (f": {message}" if message else ".")
    return UpstreamError(
        client_status,
        vendor_text(text, vendor),
        code=code or f"upstream_{status}",
        retryable=status in RETRYABLE_STATUSES,
        retry_after=retry_after_seconds(headers),
        vendor_status=status,
    )


def transport_error(vendor: VendorConfig, exc: Exception) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(504, f"Vendor '{vendor.name}' timed out.", code="upstream_timeout", retryable=True)
    return UpstreamError(
        502,
        f"Could not reach vendor '{vendor.name}' ({type(exc).__name__}).",
        code="upstream_unreachable",
        retryable=True,
    )


@asynccontextmanager
async def open_response(
    vendor: VendorConfig,
    request: httpx.Request,
    on_error: Callable[[int, bytes, httpx.Headers], UpstreamError] | None = None,
) -> AsyncIterator[httpx.Response]:
    """Send ``request`` and yield the streaming response; map failures to ``UpstreamError``.

    Leaving the block closes the response; an unfinished response's connection is
    dropped rather than returned to the pool, so the vendor sees the close at once.
    """
    if tracing.ENABLED:
        # The attempt's span (routing.relay.attempts) is current. Added after the adapter
        # authorised the request: a SigV4-signed one (Bedrock) leaves traceparent out of its
        # SignedHeaders, which AWS allows for headers other than host and x-amz-*.
        url = request.url
        tracing.outgoing(request.headers, url.host, url.port or (443 if url.scheme == "https" else 80))
    ensure_allowed(vendor.name, request.url.host)
    request.extensions["timeout"] = timeout_extension(vendor)
    try:
        response = await client().send(request, stream=True)
    except httpx.HTTPError as exc:
        raise transport_error(vendor, exc) from None
    try:
        if response.status_code >= 400:
            body = await _read_bounded(response)
            make = on_error or (lambda s, b, h: upstream_http_error(vendor, s, b, h))
            raise make(response.status_code, body, response.headers)
        yield response
    except httpx.HTTPError as exc:
        raise transport_error(vendor, exc) from None
    finally:
        await response.aclose()


async def _read_bounded(response: httpx.Response) -> bytes:
    body = b""
    async for part in response.aiter_raw():
        body += part
        if len(body) >= MAX_ERROR_BODY:
            break
    return body[:MAX_ERROR_BODY]


async def read_json(vendor: VendorConfig, response: httpx.Response) -> Any:
    body = await response.aread()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(
            502, f"Vendor '{vendor.name}' sent a body that is not JSON.", code="upstream_malformed"
        ) from None


def json_bytes(value: Any) -> bytes:
    """``orjson.dumps(value)`` in a bytes object of its own size.

    orjson returns its output buffer as is: at least 4 KiB however short the JSON. A request
    body lives as long as its stream, so for held-open streams that was a tenth of the
    router's memory per stream (tracemalloc, see the commit message); a copy costs ~0.1 us/KB.
    """
    return bytes(memoryview(orjson.dumps(value)))


def json_request(method: str, url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Request:
    return httpx.Request(
        method, parsed_url(url), content=json_bytes(body), headers={"content-type": "application/json", **headers}
    )


def idle_upstream_connections() -> dict[str, int]:
    """Open vendor connections waiting, idle, in this event loop's keep-alive pool, per
    ``host:port`` (for the leak checks: an answer read to its end returns its connection to the
    pool, which is reuse, not a leak)."""
    pool = _clients.get(id(asyncio.get_running_loop()))
    session = getattr(getattr(pool, "_transport", None), "client", None)
    connector = getattr(session, "connector", None)
    idle: dict[str, int] = {}
    # aiohttp's per-host deques of (protocol, time released); a closed one waits for cleanup.
    for key, connections in (getattr(connector, "_conns", None) or {}).items():
        count = sum(1 for protocol, _ in connections if protocol.is_connected())
        if count:
            idle[f"{key.host}:{key.port}"] = idle.get(f"{key.host}:{key.port}", 0) + count
    return idle


async def close_clients() -> None:
    for pool in list(_clients.values()):
        await pool.aclose()
    _clients.clear()


async def close_loop_client() -> None:
    """Close the pool of the running event loop only (a short-lived loop, e.g. an admin connection test)."""
    pool = _clients.pop(id(asyncio.get_running_loop()), None)
    if pool is not None:
        await pool.aclose()
