"""Traces of the relay: spans, their GenAI attributes and parent links, as a collector receives them.

The router runs in process (the ASGI entry called with scripted ``receive``/``send``) with the
in-repo demo vendor, or the fake OpenAI on loopback where the vendor request's headers are the
point; the spans go over OTLP/HTTP to a real receiver on loopback (``fakevendors.otlp``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application
from django.db import DEFAULT_DB_ALIAS, connections
from django.test import override_settings

from billing import writer
from billing.models import ApiKey, UsageRecord
from billing.services import api_key_create
from fakevendors.openai import FakeOpenAI
from fakevendors.otlp import OtlpReceiver, ReceivedSpan
from lib import logs, tracing
from routing.relay.entry import serve_http
from routing.services import model_create, vendor_create
from routing.vendors import http

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SECRET_WORD = "zanzibar-quokka"  # in every prompt: it must never reach a span
_names = itertools.count()


@pytest.fixture(scope="module", autouse=True)
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
    body: dict[str, Any],
    headers: tuple[tuple[bytes, bytes], ...] = (),
    leave_after: int | None = None,
    path: str = "/v1/chat/completions",
) -> Exchange:
    """Serve one request through the ASGI entry; the client leaves after ``leave_after`` body chunks."""
    seen = Exchange()
    payload = orjson.dumps(body)

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
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
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


def served_by(*deployments: tuple[str, str, dict[str, Any]]) -> Setup:
    """A model served by (kind, base_url, options) deployments, tried in that order, and a key."""
    n = next(_names)
    listed = []
    for priority, (kind, url, options) in enumerate(deployments):
        vendor = vendor_create(f"v{n}-{priority}", kind, url, options, credentials={"api_key": "sk-vendor-t"})
        listed.append((vendor, f"upstream-{priority}", priority, 1))
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


def assert_no_content(spans: list[ReceivedSpan], key: str) -> None:
    text = repr([(s.attributes, [e.attributes for e in s.events]) for s in spans])
    assert SECRET_WORD not in text  # no prompt text
    assert key not in text and "sk-vendor-t" not in text  # no secrets


@override_settings(SIRAYA_KEEPALIVE_SECONDS=0.05)
def test_streamed_request_is_a_server_span_with_ledger_and_attempt_children(receiver):
    setup = served_by(("demo", "", {"token_delay": "0", "first_token_delay": "0.3"}))
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01".encode()
    seen = exchange(setup.key, chat(setup, stream=True, max_tokens=50), ((b"traceparent", traceparent),))
    assert seen.status == 200 and seen.body.endswith(b"data: [DONE]\n\n")

    spans = request_trace(receiver, seen.generation_id, 4)
    server = only(spans, f"chat {setup.model}")
    admit, settle, attempt = only(spans, "ledger.admit"), only(spans, "ledger.settle"), only(spans, "chat upstream-0")
    # The client's trace continues; the ledger's spans and the attempt are the request's children.
    assert (server.trace_id, server.parent_span_id, server.kind) == (CLIENT_TRACE, CLIENT_SPAN, "server")
    assert {s.parent_span_id for s in (admit, settle, attempt)} == {server.span_id}
    assert admit.end_ns <= attempt.start_ns and attempt.end_ns <= settle.start_ns
    assert (admit.kind, settle.kind, attempt.kind) == ("internal", "internal", "client")

    record = UsageRecord.objects.get(generation_id=seen.generation_id)
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["siraya.api"] == "chat.completions"
    assert a["gen_ai.request.model"] == setup.model and a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.response.model"] == "upstream-0" and a["gen_ai.provider.name"] == "demo"
    assert a["gen_ai.usage.input_tokens"] == record.prompt_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == record.completion_tokens > 0
    assert a["siraya.tokens_delivered"] == record.tokens_delivered > 0
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert Decimal(a["siraya.cost_usd"]) == record.cost > 0
    assert a["siraya.key_prefix"] == setup.api_key.prefix
    assert (a["siraya.cancelled"], a["http.response.status_code"], server.status) == (False, 200, "unset")
    assert server.resource["service.name"] == "siraya-test"
    # Time to first token and the keepalives sent while the vendor was silent are events.
    (first,) = server.event("first_token")
    assert first.attributes["siraya.time_to_first_token_ms"] == record.first_token_ms >= 300
    keepalives = server.event("keepalive")
    assert len(keepalives) >= 2 and all(k.time_ns < first.time_ns for k in keepalives)
    assert attempt.attributes["gen_ai.usage.output_tokens"] == record.completion_tokens
    # The usage record leads to the trace.
    assert record.trace_id == CLIENT_TRACE
    assert_no_content(spans, setup.key)


@pytest.mark.parametrize(
    ("path", "api", "body"),
    [
        ("/v1/messages", "messages", {"max_tokens": 50, "messages": [{"role": "user", "content": "one two three"}]}),
        ("/v1/responses", "responses", {"input": "one two three"}),
    ],
)
def test_every_client_api_is_traced_the_same_way(receiver, path, api, body):
    setup = served_by(DEMO)
    seen = exchange(setup.key, {"model": setup.model, "stream": True, **body}, path=path)
    assert seen.status == 200

    spans = request_trace(receiver, seen.generation_id, 4)
    server = only(spans, f"chat {setup.model}")
    admit, settle, attempt = only(spans, "ledger.admit"), only(spans, "ledger.settle"), only(spans, "chat upstream-0")
    assert {s.parent_span_id for s in (admit, settle, attempt)} == {server.span_id}
    record = UsageRecord.objects.get(generation_id=seen.generation_id)
    assert server.attributes["siraya.api"] == api
    assert server.attributes["gen_ai.usage.output_tokens"] == record.completion_tokens > 0
    assert record.trace_id == server.trace_id


def test_cancelled_stream_carries_reason_and_tokens_delivered(receiver):
    setup = served_by(("demo", "", {"token_delay": "0.02"}))
    long_prompt = chat(setup, stream=True)
    long_prompt["messages"][0]["content"] += " word" * 200
    seen = exchange(setup.key, long_prompt, leave_after=6)

    spans = request_trace(receiver, seen.generation_id, 4)
    server, attempt = only(spans, f"chat {setup.model}"), only(spans, "chat upstream-0")
    record = UsageRecord.objects.get(generation_id=seen.generation_id)
    assert record.status == "cancelled"
    a = server.attributes
    assert (a["siraya.cancelled"], a["siraya.cancel_reason"]) == (True, "client_disconnected")
    assert 0 < a["siraya.tokens_delivered"] == record.tokens_delivered < 100
    assert a["gen_ai.usage.output_tokens"] == record.completion_tokens
    assert a["http.response.status_code"] == 499
    assert attempt.attributes["siraya.cancelled"] is True
    assert record.trace_id == server.trace_id


def test_fallback_shows_sibling_attempts_and_the_vendor_gets_the_attempts_traceparent(receiver):
    with FakeOpenAI(status=503, error_body={"error": {"message": "overloaded", "type": "server_error"}}) as down:
        setup = served_by(("openai", down.url + "/v1", {}), DEMO)
        seen = exchange(setup.key, chat(setup, stream=True))
        assert seen.status == 200
        vendor_saw = down.last().headers

    spans = request_trace(receiver, seen.generation_id, 5)
    server = only(spans, f"chat {setup.model}")
    failed, answered = only(spans, "chat upstream-0"), only(spans, "chat upstream-1")
    assert failed.parent_span_id == answered.parent_span_id == server.span_id
    assert failed.end_ns <= answered.start_ns
    assert (failed.status, failed.attributes["error.type"]) == ("error", "upstream_error")
    assert failed.attributes["http.response.status_code"] == 503
    assert (failed.attributes["siraya.attempt"], answered.attributes["siraya.attempt"]) == (1, 2)
    assert failed.attributes["gen_ai.provider.name"] == "openai"
    assert failed.attributes["server.address"] == "127.0.0.1"
    assert "overloaded" not in failed.status_message  # the vendor's words stay in the usage record
    assert answered.attributes["siraya.fallback_reason"] == "upstream_error"
    assert answered.status == "unset" and server.status == "unset"
    assert server.attributes["siraya.attempts"] == 2
    assert server.attributes["gen_ai.provider.name"] == "demo"
    # The vendor request carried the failed attempt's span as its parent.
    version, trace_id, parent_id, flags = vendor_saw["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", server.trace_id, failed.span_id)
    assert int(flags, 16) & 1  # sampled


def test_vendor_error_marks_the_attempt_and_the_request_failed(receiver):
    with FakeOpenAI(status=400, error_body={"error": {"message": "bad things", "code": "invalid_value"}}) as vendor:
        setup = served_by(("openai", vendor.url + "/v1", {}))
        seen = exchange(setup.key, chat(setup))
    assert seen.status == 400

    spans = request_trace(receiver, seen.generation_id, 4)
    server, attempt = only(spans, f"chat {setup.model}"), only(spans, "chat upstream-0")
    assert attempt.status == "error" and attempt.attributes["siraya.vendor_code"] == "invalid_value"
    assert server.status == "error"
    assert server.attributes["error.type"] == attempt.attributes["error.type"] == "upstream_invalid_request"
    assert server.attributes["http.response.status_code"] == 400
    assert server.attributes["siraya.cancelled"] is False
    assert_no_content(spans, setup.key)


def test_refused_request_is_one_failed_span_and_its_record_names_the_trace(receiver):
    setup = served_by(DEMO)
    seen = exchange(setup.key, {**chat(setup), "model": "traced/no-such-model"})
    assert seen.status == 404

    spans = request_trace(receiver, seen.generation_id, 1)
    server = only(spans, "chat traced/no-such-model")
    assert server.status == "error" and server.attributes["error.type"] == "model_not_found"
    assert server.attributes["http.response.status_code"] == 404
    assert not [s for s in spans if s.name.startswith("ledger.")]  # refused before admission
    assert UsageRecord.objects.get(generation_id=seen.generation_id).trace_id == server.trace_id


def test_unsampled_request_is_not_exported_and_its_record_has_no_trace(receiver):
    setup = served_by(DEMO)
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00".encode()  # the client's trace is not sampled
    seen = exchange(setup.key, chat(setup), ((b"traceparent", traceparent),))
    marker = exchange(setup.key, chat(setup))  # a sampled request after it

    request_trace(receiver, marker.generation_id, 4)
    assert not [s for s in receiver.spans if s.trace_id == CLIENT_TRACE]
    assert UsageRecord.objects.get(generation_id=seen.generation_id).trace_id == ""


def test_content_is_recorded_only_when_the_operator_asks(receiver, monkeypatch):
    monkeypatch.setattr(tracing, "CONTENT", True)
    setup = served_by(DEMO)
    seen = exchange(setup.key, chat(setup))

    server = only(request_trace(receiver, seen.generation_id, 4), f"chat {setup.model}")
    assert SECRET_WORD in server.attributes["gen_ai.input.messages"]
    (output,) = orjson.loads(server.attributes["gen_ai.output.messages"])
    assert output["role"] == "assistant" and SECRET_WORD in output["content"]


class JsonLines(logging.Handler):
    """Log lines as the router writes them: formatted when written, in the request's context."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


def test_log_lines_carry_the_trace_id(receiver):
    lines = JsonLines()
    for name in ("siraya.relay", "siraya.access"):
        logging.getLogger(name).addHandler(lines)
    try:
        with FakeOpenAI(status=503) as down:  # a failed attempt writes a warning line
            setup = served_by(("openai", down.url + "/v1", {}), DEMO)
            seen = exchange(setup.key, chat(setup))
    finally:
        for name in ("siraya.relay", "siraya.access"):
            logging.getLogger(name).removeHandler(lines)
    server = only(request_trace(receiver, seen.generation_id, 5), f"chat {setup.model}")
    warned = [line for line in lines.lines if line["message"].startswith("vendor attempt failed")]
    access = [line for line in lines.lines if line["logger"] == "siraya.access"]
    assert len(warned) == len(access) == 1
    for line in warned + access:
        assert (line["trace_id"], line["generation_id"]) == (server.trace_id, seen.generation_id)


def test_tracing_off_sends_no_traceparent_and_records_no_trace():
    assert not tracing.ENABLED
    with FakeOpenAI() as vendor:
        setup = served_by(("openai", vendor.url + "/v1", {}))
        seen = exchange(setup.key, chat(setup), ((b"traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01".encode()),))
        assert seen.status == 200
        assert "traceparent" not in vendor.last().headers
    assert UsageRecord.objects.get(generation_id=seen.generation_id).trace_id == ""
