"""The HTTP edge: what a request must satisfy before any application reads it.

Every path: a body limit and a deadline for the body to arrive. Django's ASGI handler spools
a whole body (to a temporary file past 2.5 MB) before it routes or authenticates anything,
so the limit is enforced here, on the ASGI ``receive`` it is given, not in a view.

The relay's path (``/v1/chat/completions``) runs beside Django's middleware, not inside it,
so the rules Django's ``SecurityMiddleware`` and ``get_host`` apply to every other path are
applied here too, with the same settings: ``ALLOWED_HOSTS``, ``SECURE_SSL_REDIRECT`` (with
``SECURE_PROXY_SSL_HEADER`` and ``SECURE_REDIRECT_EXEMPT``) and ``SECURE_HSTS_*``.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from routing.errors import RouterError

# A server that tells the application of the client's disconnect by a call puts this key in the
# request's scope (``siraya_site.serve``'s protocol, ``ops.http_errors``); the channel sets it to
# its callback, which the server calls when the connection is lost before the response completed;
# lost before the channel set it (the client left during admission), the server sets it to False.
# Without it (daphne, the in-process harness) a second task per request waits on ``receive()``
# for the ``http.disconnect`` message instead.
DISCONNECT_CALLBACK = "siraya.on_disconnect"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

API_PREFIX = "/v1/"
_DISCONNECT = {"type": "http.disconnect"}


def is_api(path: str) -> bool:
    return path.startswith(API_PREFIX) or path == API_PREFIX.rstrip("/")


def body_limit(path: str) -> int:
    """Bytes a request body on ``path`` may have: the API's limit under /v1/, the forms' elsewhere."""
    return settings.SIRAYA_MAX_BODY_BYTES if is_api(path) else settings.SIRAYA_MAX_FORM_BODY_BYTES


def declared_length(scope: Scope) -> int:
    """The request's Content-Length (0 when absent: chunked bodies are counted as they arrive)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def too_large(limit: int) -> RouterError:
    # The rest of the body is never read, so the connection cannot carry another request.
    return RouterError(
        413, f"Request body is larger than {limit} bytes.", code="request_too_large", headers={"connection": "close"}
    )


def too_slow(seconds: float) -> RouterError:
    return RouterError(
        408,
        f"The request body did not arrive within {seconds:g} seconds.",
        code="request_timeout",
        headers={"connection": "close"},
    )


def refusal_body(path: str, error: RouterError) -> tuple[bytes, bytes]:
    """The body and content type of a refusal: the API's error JSON under /v1/, plain text elsewhere."""
    if is_api(path):
        return error.json(), b"application/json"
    return error.message.encode() + b"\n", b"text/plain; charset=utf-8"


async def refuse(send: Send, path: str, error: RouterError) -> None:
    """Answer a refused request (``refusal_body``)."""
    body, content_type = refusal_body(path, error)
    headers = [(b"content-type", content_type)]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class BodyGuard:
    """ASGI ``receive`` that stops a request body at ``limit`` bytes or after ``seconds``.

    On either, the application is told the client left (``http.disconnect``: Django drops the
    request without answering) and ``refusal`` holds the error to answer with. Once the body
    is complete, messages pass through untouched (Django's disconnect listener).
    """

    __slots__ = ("_done", "_due", "_limit", "_receive", "_seconds", "_size", "refusal")

    def __init__(self, receive: Receive, limit: int, seconds: float) -> None:
        self._receive = receive
        self._limit = limit
        self._seconds = seconds
        self._due: float | None = None
        self._size = 0
        self._done = False
        self.refusal: RouterError | None = None

    async def __call__(self) -> dict[str, Any]:
        if self._done:
            return await self._receive()
        if self.refusal is not None:
            return _DISCONNECT
        if self._due is None:
            self._due = asyncio.get_running_loop().time() + self._seconds
        try:
            async with asyncio.timeout_at(self._due):
                message = await self._receive()
        except TimeoutError:
            self.refusal = too_slow(self._seconds)
            return _DISCONNECT
        if message["type"] != "http.request":
            self._done = True
            return message
        self._size += len(message.get("body", b""))
        if self._size > self._limit:
            self.refusal = too_large(self._limit)
            return _DISCONNECT
        self._done = not message.get("more_body", False)
        return message


# -- the relay's path: Django's host and HTTPS rules ----------------------------------------


def _meta_header(scope: Scope, meta_name: str) -> str | None:
    """A header by its Django META name (``HTTP_X_FORWARDED_PROTO``), as Django's ASGIRequest
    builds it: names with an underscore ignored (``x_forwarded_proto`` could spoof
    ``x-forwarded-proto``), several occurrences joined with commas."""
    wanted = meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1")
    values = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name == wanted]
    return ",".join(values) if values else None


def is_secure(scope: Scope) -> bool:
    """``HttpRequest.is_secure()``: the proxy's header when ``SECURE_PROXY_SSL_HEADER`` names one."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = _meta_header(scope, header)
        if value is not None:
            return bool(value.split(",", 1)[0].strip() == secure_value)
    return bool(scope.get("scheme", "http") == "https")


def _raw_host(scope: Scope) -> str:
    """``HttpRequest._get_raw_host()``."""
    if settings.USE_X_FORWARDED_HOST:
        forwarded = _meta_header(scope, "HTTP_X_FORWARDED_HOST")
        if forwarded is not None:
            return forwarded
    host = _meta_header(scope, "HTTP_HOST")
    if host is not None:
        return host
    name, port = scope.get("server") or ("", None)
    if port is None or str(port) == ("443" if is_secure(scope) else "80"):
        return str(name)
    return f"{name}:{port}"


def host_allowed(scope: Scope) -> bool:
    """``HttpRequest.get_host()``'s check against ``ALLOWED_HOSTS`` (DEBUG's localhost default included)."""
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    return _host_verdict(_raw_host(scope), tuple(allowed_hosts))


@functools.lru_cache(maxsize=256)
def _host_verdict(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    # Cached: a client sends the same Host on every request, and the check costs more than
    # the rest of the edge together.
    domain, _ = split_domain_port(host)
    return bool(domain and validate_host(domain, allowed_hosts))


# Refused before its body is read: the connection cannot carry another request.
_CLOSE = {"connection": "close"}


def transport_refusal(scope: Scope) -> RouterError | None:
    """Why the relay's path must not serve this request as it came (wrong host, plain HTTP), if so.

    With ``SECURE_SSL_REDIRECT`` Django answers plain HTTP with a 301 to https. For an API
    POST a redirect helps no one: most clients follow a 301 with a GET (then a 405), and the
    key and prompt have already crossed the network in clear. A 403 that says so gets the
    client's base URL fixed instead.
    """
    if not host_allowed(scope):
        return RouterError(
            400, "The request's Host header is not one this router serves.", code="bad_request", headers=_CLOSE
        )
    if settings.SECURE_SSL_REDIRECT and not is_secure(scope):
        path = scope["path"].lstrip("/")
        if not any(re.search(pattern, path) for pattern in settings.SECURE_REDIRECT_EXEMPT):
            return RouterError(
                403,
                "This router accepts API requests over HTTPS only: use an https:// base URL "
                "(this request's API key was sent unencrypted).",
                code="https_required",
                headers=_CLOSE,
            )
    return None


def hsts_headers(scope: Scope) -> tuple[tuple[bytes, bytes], ...]:
    """``Strict-Transport-Security`` as ``SecurityMiddleware`` sets it: on secure requests only."""
    seconds = settings.SECURE_HSTS_SECONDS
    if not seconds or not is_secure(scope):
        return ()
    value = f"max-age={seconds}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return ((b"strict-transport-security", value.encode()),)
