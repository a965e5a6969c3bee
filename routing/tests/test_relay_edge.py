"""The relay's path under the rules Django's middleware applies to every other path, in process.

``/v1/chat/completions`` is served beside Django's middleware, so the host check, the HTTPS
rule and HSTS are applied by ``routing.relay.edge``; Django's own request and middleware are
the oracle here. The ASGI entry is called with scripted ``receive``/``send``.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpResponse
from django.middleware.security import SecurityMiddleware
from django.test import override_settings

from routing.relay import edge
from routing.relay.entry import serve_http

BODY = orjson.dumps({"model": "test/fake", "messages": [{"role": "user", "content": "hi"}]})


@dataclass
class Exchange:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    body_reads: int = 0  # how many times the application asked for the request body

    def error(self) -> dict[str, Any]:
        assert self.headers[b"content-type"] == b"application/json"
        return orjson.loads(self.body)["error"]


def scope_for(
    headers: list[tuple[bytes, bytes]] | None = None, *, scheme: str = "http", path: str = "/v1/chat/completions"
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000")] if headers is None else headers,
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }


def exchange(scope: dict[str, Any], body: bytes = BODY) -> Exchange:
    """Serve one request through the ASGI entry; return what the client got."""
    seen = Exchange()

    async def receive() -> dict[str, Any]:
        seen.body_reads += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen.status = message["status"]
            seen.headers = dict(message["headers"])
        else:
            seen.body += message.get("body", b"")

    async def serve() -> None:
        try:
            await serve_http(get_asgi_application(), scope, receive, send)
        finally:
            # The key lookup's database thread keeps its connection (CONN_MAX_AGE): close it,
            # or the test database cannot be dropped at the end of the run.
            await sync_to_async(connections.close_all)()

    asyncio.run(serve())
    return seen


def django_allows_host(scope: dict[str, Any]) -> bool:
    try:
        ASGIRequest(scope, io.BytesIO(b"")).get_host()
    except DisallowedHost:
        return False
    return True


HOSTS = [
    [(b"host", b"127.0.0.1:8000")],
    [(b"host", b"localhost")],
    [(b"host", b"[::1]:8000")],
    [(b"host", b"evil.example")],
    [(b"host", b"127.0.0.1.evil.example")],
    [(b"host", b"bad host")],
    [(b"host", b"")],
    [],  # no Host header: the server's own name
    [(b"host", b"evil.example"), (b"x-forwarded-host", b"localhost")],
    [(b"host", b"localhost"), (b"x-forwarded-host", b"evil.example")],
]


@pytest.mark.parametrize("forwarded_host", [False, True])
@pytest.mark.parametrize("headers", HOSTS)
def test_host_check_agrees_with_djangos(headers, forwarded_host):
    with override_settings(USE_X_FORWARDED_HOST=forwarded_host):
        scope = scope_for(headers)
        assert edge.host_allowed(scope) == django_allows_host(scope)


def test_disallowed_host_gets_400_before_anything_is_read():
    seen = exchange(scope_for([(b"host", b"evil.example")]))
    assert seen.status == 400
    assert seen.error()["code"] == "bad_request"
    assert b"evil.example" not in seen.body
    assert seen.body_reads == 0


@override_settings(ALLOWED_HOSTS=["api.example.com"])
def test_allowed_host_reaches_the_relay():
    seen = exchange(scope_for([(b"host", b"api.example.com")]))
    # The relay ran: no key was sent.
    assert (seen.status, seen.error()["code"]) == (401, "missing_api_key")


PROXY = ("HTTP_X_FORWARDED_PROTO", "https")


@pytest.mark.parametrize(
    ("proxy_header", "scheme", "headers"),
    [
        (None, "http", []),
        (None, "https", []),
        (None, "http", [(b"x-forwarded-proto", b"https")]),  # not trusted unless configured
        (PROXY, "http", [(b"x-forwarded-proto", b"https")]),
        (PROXY, "http", [(b"x-forwarded-proto", b"http")]),
        (PROXY, "https", [(b"x-forwarded-proto", b"http")]),
        (PROXY, "http", [(b"x-forwarded-proto", b"https, http")]),
        (PROXY, "http", [(b"x-forwarded-proto", b"http"), (b"x-forwarded-proto", b"https")]),
        (PROXY, "http", [(b"x_forwarded_proto", b"https")]),
        (PROXY, "https", []),
    ],
)
def test_secure_request_agrees_with_djangos(proxy_header, scheme, headers):
    with override_settings(SECURE_PROXY_SSL_HEADER=proxy_header):
        scope = scope_for([(b"host", b"localhost"), *headers], scheme=scheme)
        assert edge.is_secure(scope) == ASGIRequest(scope, io.BytesIO(b"")).is_secure()


@override_settings(SECURE_SSL_REDIRECT=True, SECURE_PROXY_SSL_HEADER=PROXY)
def test_plain_http_is_refused_with_403_when_https_is_required():
    seen = exchange(scope_for())
    assert seen.status == 403
    error = seen.error()
    assert error["code"] == "https_required" and "https://" in error["message"]
    assert seen.headers[b"connection"] == b"close"
    assert seen.body_reads == 0


@override_settings(SECURE_SSL_REDIRECT=True, SECURE_PROXY_SSL_HEADER=PROXY)
@pytest.mark.parametrize(
    ("scheme", "headers"), [("https", []), ("http", [(b"x-forwarded-proto", b"https")])], ids=["tls", "tls-proxy"]
)
def test_https_request_is_served_when_https_is_required(scheme, headers):
    seen = exchange(scope_for([(b"host", b"localhost"), *headers], scheme=scheme))
    assert (seen.status, seen.error()["code"]) == (401, "missing_api_key")


@override_settings(SECURE_SSL_REDIRECT=True, SECURE_REDIRECT_EXEMPT=[r"^v1/chat/completions$"])
def test_exempt_path_is_served_over_plain_http():
    assert exchange(scope_for()).status == 401


def django_hsts(scheme: str) -> bytes | None:
    request = ASGIRequest(scope_for([(b"host", b"localhost")], scheme=scheme), io.BytesIO(b""))
    response = SecurityMiddleware(lambda request: HttpResponse())(request)
    assert isinstance(response, HttpResponse)
    value = response.headers.get("Strict-Transport-Security")
    return None if value is None else value.encode()


@pytest.mark.parametrize("scheme", ["https", "http"])
@pytest.mark.parametrize(
    "hsts",
    [
        {"SECURE_HSTS_SECONDS": 0},
        {"SECURE_HSTS_SECONDS": 3600},
        {"SECURE_HSTS_SECONDS": 31536000, "SECURE_HSTS_INCLUDE_SUBDOMAINS": True, "SECURE_HSTS_PRELOAD": True},
    ],
)
def test_relay_responses_carry_hsts_as_django_sets_it(hsts, scheme):
    with override_settings(**hsts):
        expected = django_hsts(scheme)
        seen = exchange(scope_for([(b"host", b"localhost")], scheme=scheme))
    assert seen.status == 401
    assert seen.headers.get(b"strict-transport-security") == expected
    if hsts["SECURE_HSTS_SECONDS"] and scheme == "https":
        assert expected is not None


def test_missing_key_gets_401_without_the_body_being_read():
    seen = exchange(scope_for([(b"host", b"localhost")]))
    assert (seen.status, seen.error()["code"]) == (401, "missing_api_key")
    assert seen.body_reads == 0
    assert seen.headers[b"connection"] == b"close"


def test_unknown_key_gets_401_without_the_body_being_read(transactional_db):
    headers = [(b"host", b"localhost"), (b"authorization", b"Bearer sk-siraya-" + b"0" * 40)]
    seen = exchange(scope_for(headers))
    assert (seen.status, seen.error()["code"]) == (401, "invalid_api_key")
    assert seen.body_reads == 0
