"""What the tracing tests share: a real OTLP/HTTP receiver on loopback with tracing on, one
request through the router's ASGI entry in process, models served by given vendors, and the
trace a request left.

The router runs in process (the ASGI entry called with scripted ``receive``/``send``) with the
in-repo demo vendor, or fake vendors on loopback where the vendor request's headers are the
point; the spans go over OTLP/HTTP to a real receiver on loopback (``fakevendors.otlp``).
Its fixtures are the routing tests' (``routing/tests/conftest.py``); a module of in-process
traced requests uses ``writer_connection_closed`` (``pytestmark``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application
from django.db import DEFAULT_DB_ALIAS, connections

from billing import writer
from billing.models import ApiKey
from billing.services import api_key_create
from fakevendors.otlp import OtlpReceiver, ReceivedSpan
from lib import tracing
from routing.relay.entry import serve_http
from routing.services import model_create, vendor_create
from routing.vendors import http

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SECRET_WORD = "zanzibar-quokka"  # in every prompt: it must never reach a span
VENDOR_KEY = "sk-vendor-t"
_names = itertools.count()


@pytest.fixture(scope="module")
def writer_connection_closed(django_db_blocker: Any) -> Iterator[None]:
    """Close the group-commit writer's connection after these in-process requests (else the
    test database cannot be dropped on PostgreSQL: a session is still open)."""
    yield

    async def writers_connection() -> Any:
        return await writer.group_committed(lambda: connections[DEFAULT_DB_ALIAS])()

    with django_db_blocker.unblock():
        connection = asyncio.run(writers_connection())
    connection.inc_thread_sharing()  # the writer thread is idle: nothing is using it now
    try:
        connection.close()
    finally:
        connection.dec_thread_sharing()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """Tracing on, exporting to a receiver on loopback; off again afterwards."""
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "siraya-test")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
        monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
        # setup() adds the secret-bearing headers to this variable: restored afterwards.
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "")
        assert tracing.setup()
        try:
            yield receiver
        finally:
            tracing.shutdown()


@dataclass
class Exchange:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)

    @property
    def generation_id(self) -> str:
        return self.headers[b"x-generation-id"].decode()

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def exchange(
    key: str,
    body: dict[str, Any] | None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    leave_after: int | None = None,
    path: str = "/v1/chat/completions",
    method: str = "POST",
    query: str = "",
) -> Exchange:
    """Serve one request through the ASGI entry; the client leaves after ``leave_after`` body chunks."""
    seen = Exchange()
    payload = b"" if body is None else orjson.dumps(body)

    async def serve() -> None:
        gone = asyncio.Event()
        reads = 0

        async def receive() -> dict[str, Any]:
            nonlocal reads
            reads += 1
            if reads == 1:
                return {"type": "http.request", "body": payload, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen.status, seen.headers = message["status"], dict(message["headers"])
            elif message.get("body"):
                seen.chunks.append(message["body"])
                if leave_after is not None and len(seen.chunks) >= leave_after:
                    gone.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {key}".encode()), *headers],
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
        }
        try:
            await serve_http(get_asgi_application(), scope, receive, send)
        finally:
            await http.close_loop_client()  # this loop's vendor connections
            await sync_to_async(connections.close_all)()

    asyncio.run(serve())
    return seen


@dataclass
class Setup:
    key: str
    api_key: ApiKey
    model: str


def served_by(
    *deployments: tuple[str, str, dict[str, Any]], credentials: dict[str, Any] | None = None, upstream: str = ""
) -> Setup:
    """A model served by (kind, base_url, options) deployments, tried in that order, and a key;
    the deployments' upstream models are ``upstream-<n>``, or all ``upstream`` when given."""
    n = next(_names)
    listed = []
    for priority, (kind, url, options) in enumerate(deployments):
        vendor = vendor_create(
            f"v{n}-{priority}", kind, url, options, credentials=credentials or {"api_key": VENDOR_KEY}
        )
        listed.append((vendor, upstream or f"upstream-{priority}", priority, 1))
    model = f"traced/m{n}"
    model_create(model, deployments=listed, input_price=Decimal("1"), output_price=Decimal("2"))
    api_key, plaintext = api_key_create(f"tracer{n}")
    return Setup(plaintext, api_key, model)


DEMO = ("demo", "", {"token_delay": "0"})


def chat(setup: Setup, **body: Any) -> dict[str, Any]:
    return {
        "model": setup.model,
        "messages": [{"role": "user", "content": f"tell me about {SECRET_WORD} one two three four five"}],
        **body,
    }


# Each chat client API's path and what its dialect names it on spans (siraya.api).
CHAT_APIS = {"/v1/chat/completions": "chat.completions", "/v1/messages": "messages", "/v1/responses": "responses"}


def asking(path: str, setup: Setup, text: str, **body: Any) -> dict[str, Any]:
    """A request to the chat client API at ``path`` asking ``setup``'s model ``text``."""
    if path == "/v1/responses":
        return {"model": setup.model, "input": text, **body}
    limit = {"max_tokens": 1000} if path == "/v1/messages" else {}
    return {"model": setup.model, "messages": [{"role": "user", "content": text}], **limit, **body}


def request_trace(receiver: OtlpReceiver, generation_id: str, spans_expected: int) -> list[ReceivedSpan]:
    """The spans of the trace whose server span carries ``generation_id``, once all have arrived."""
    tracing.flush()

    def complete(spans: list[ReceivedSpan]) -> bool:
        server = [s for s in spans if s.attributes.get("siraya.generation_id") == generation_id and s.kind == "server"]
        return bool(server) and len([s for s in spans if s.trace_id == server[0].trace_id]) >= spans_expected

    receiver.wait_for(complete)
    server = next(s for s in receiver.spans if s.attributes.get("siraya.generation_id") == generation_id)
    return receiver.trace(server.trace_id)


def only(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def assert_no_content(spans: list[ReceivedSpan], *secrets: str) -> None:
    text = repr([(s.attributes, [e.attributes for e in s.events]) for s in spans])
    assert SECRET_WORD not in text  # no prompt text
    for secret in (VENDOR_KEY, *secrets):
        assert secret not in text  # no key, no vendor credential
