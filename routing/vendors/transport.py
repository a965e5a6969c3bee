"""The upstream transport: httpx's API over aiohttp's HTTP/1.1 client (``httpx-aiohttp``).

Measured on the bare relay (``make bench``), httpx's default transport (httpcore over anyio)
costs several times more CPU per request than aiohttp's C-accelerated parser; the adapters
keep using httpx's API. Closing an unfinished response closes its socket (aiohttp does not
return a connection whose body was not read to the pool), so a cancelled request drops the
vendor connection at once.

aiohttp's errors are mapped to the httpx exceptions the relay already understands, more
precisely than ``httpx_aiohttp`` does (it reports a refused connection as a timeout).
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

logger = logging.getLogger(__name__)
# (host, the addresses it resolved to) -> why connecting is refused, or None.
AddressCheck = Callable[[str, list[str]], str | None]


def _mapped(exc: BaseException) -> httpx.TransportError | None:
    """The httpx error for an aiohttp failure (``None``: not a transport failure)."""
    cause = exc.__cause__ if isinstance(exc, httpx.TransportError) and exc.__cause__ is not None else exc
    message = str(cause) or type(cause).__name__
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(cause, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(cause, TimeoutError):
        return httpx.TimeoutException(message)
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(cause, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message)
    if isinstance(cause, aiohttp.ClientError | OSError):
        return httpx.ReadError(message)
    return exc if isinstance(exc, httpx.TransportError) else None


class _Body(httpx.AsyncByteStream):
    """An aiohttp response body as httpx's stream, aiohttp's errors mapped to httpx's.

    Reads aiohttp's stream directly (``httpx_aiohttp``'s ``AiohttpResponseStream`` added one
    more generator per read and per open stream)."""

    __slots__ = ("response",)
    CHUNK_SIZE = 16 * 1024

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self.response.content.iter_chunked(self.CHUNK_SIZE):
                yield part
        except Exception as exc:
            mapped = _mapped(exc)
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        try:
            await self.response.__aexit__(None, None, None)
        except Exception as exc:
            mapped = _mapped(exc)
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc


class _CheckedResolver(AbstractResolver):
    """The default resolver, then ``check`` on what a name resolved to (before any connection).

    A URL's host is checked before the request; this catches a name that resolves to an
    address the policy refuses (IP literals never reach a resolver)."""

    def __init__(self, check: AddressCheck) -> None:
        self.inner = aiohttp.DefaultResolver()
        self.check = check

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        reason = self.check(host, [str(result["host"]) for result in found])
        if reason is not None:
            logger.warning("upstream connection refused: %s", reason)
            raise OSError(f"connection refused by the vendor host policy: {reason}")
        return found

    async def close(self) -> None:
        await self.inner.close()


class UpstreamTransport(AiohttpTransport):
    def __init__(self, keepalive_expiry: float = 30.0, address_check: AddressCheck | None = None) -> None:
        super().__init__(trust_env=False, client=self._session)
        self.keepalive_expiry = keepalive_expiry
        self.address_check = address_check

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0,  # no pool-wide cap: concurrency is bounded by the relay's clients
            keepalive_timeout=self.keepalive_expiry,
            ssl=self.ssl_context,
            enable_cleanup_closed=True,
            resolver=_CheckedResolver(self.address_check) if self.address_check else None,
        )
        # No cookie jar: one vendor's cookies must never ride along on another client's request.
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._send(request)
        except Exception as exc:
            mapped = _mapped(exc)
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc
        return response

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` byte for byte as httpx built it.

        ``httpx_aiohttp`` hands aiohttp ``str(url)``, which yarl re-quotes (``%3A`` becomes
        ``:``); a SigV4 signature covers the exact path, so the URL goes over already encoded.
        """
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        timeout = request.extensions.get("timeout", {})
        try:
            data: bytes | httpx.AsyncByteStream | None = request.content or None
        except httpx.RequestNotRead:
            data = request.stream  # type: ignore[assignment]
            request.headers.pop("transfer-encoding", None)  # aiohttp frames the body itself
        with map_aiohttp_exceptions():
            response = await self.client.request(
                method=request.method,
                url=_aiohttp_url(request.url),
                headers=request.headers,
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=_aiohttp_timeout(timeout.get("connect"), timeout.get("read"), timeout.get("pool")),
            ).__aenter__()
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions=extensions,
        )


# A router calls a handful of URLs with a handful of timeouts: each converted once, not per request.
@functools.lru_cache(maxsize=4096)
def _yarl_url(reference: Any) -> yarl.URL:
    return yarl.URL(str(reference), encoded=True)


def _aiohttp_url(url: httpx.URL) -> yarl.URL:
    """The URL as httpx encoded it (see ``_send``); keyed by its parsed parts (a named tuple)."""
    return _yarl_url(url._uri_reference)


@functools.lru_cache(maxsize=1024)
def _aiohttp_timeout(connect: float | None, read: float | None, pool: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(sock_connect=connect, sock_read=read, connect=pool)
