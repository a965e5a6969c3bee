"""Every /v1/ endpoint is traced: a request the relay refuses at the door (a method other than
POST) is still one server span, and the API endpoints Django serves (models, count_tokens,
stored responses, generation, key) are the Django instrumentation's server spans, continuing
the client's trace, with the key's public prefix; captured headers never hold a secret."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from billing.models import UsageRecord
from fakevendors.otlp import OtlpReceiver, ReceivedSpan
from lib import tracing
from routing.tests.tracing_helpers import CLIENT_TRACE, DEMO, Setup, asking, exchange, request_trace, served_by

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("writer_connection_closed")]


def traceparent(parent: str) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"traceparent", f"00-{CLIENT_TRACE}-{parent}-01".encode()),)


def child_of(receiver: OtlpReceiver, parent: str) -> ReceivedSpan:
    """The one span whose parent is the client's span ``parent``, once it has arrived."""
    tracing.flush()
    spans = receiver.wait_for(lambda spans: any(s.parent_span_id == parent for s in spans))
    (span,) = [s for s in spans if s.parent_span_id == parent]
    assert span.trace_id == CLIENT_TRACE
    return span


@pytest.mark.parametrize(
    ("path", "name"), [("/v1/chat/completions", "chat"), ("/v1/messages", "chat"), ("/v1/embeddings", "embeddings")]
)
def test_request_refused_at_the_door_is_one_failed_server_span(receiver, path, name):
    seen = exchange("sk-siraya-unused", None, traceparent("0000000000000a01"), path=path, method="GET")
    assert seen.status == 405

    span = child_of(receiver, "0000000000000a01")
    assert (span.name, span.kind, span.status) == (name, "server", "error")
    a = span.attributes
    assert (a["gen_ai.operation.name"], a["error.type"], a["http.response.status_code"]) == (
        name,
        "method_not_allowed",
        405,
    )
    assert (a["http.request.method"], a["url.path"]) == ("GET", path)


@pytest.fixture
def django_traced(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """Tracing on with Django's instrumentation (as ``siraya_site.asgi`` starts it), capturing
    every request header, as an operator may ask it to."""
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    instrumentor = DjangoInstrumentor()
    instrumentor.instrument(tracer_provider=tracing.provider())
    try:
        yield receiver
    finally:
        instrumentor.uninstrument()


def stored_response(receiver: OtlpReceiver, setup: Setup) -> str:
    """The id of a Responses answer the router stored for ``setup``'s key."""
    seen = exchange(setup.key, asking("/v1/responses", setup, "one two three"), path="/v1/responses")
    assert seen.status == 200
    request_trace(receiver, seen.generation_id, 4)
    return str(orjson.loads(seen.body)["id"])


def test_api_endpoints_django_serves_are_server_spans_with_the_key_prefix(django_traced):
    setup = served_by(DEMO)
    response_id = stored_response(django_traced, setup)
    generation_id = UsageRecord.objects.get(api_key=setup.api_key).generation_id
    count = {"model": setup.model, "messages": [{"role": "user", "content": "one two three"}]}
    calls = [
        ("GET", "/v1/models", "", None),
        ("POST", "/v1/messages/count_tokens", "", count),
        ("GET", "/v1/generation", f"id={generation_id}", None),
        ("GET", "/v1/key", "", None),
        ("GET", f"/v1/responses/{response_id}", "", None),
        ("GET", f"/v1/responses/{response_id}/input_items", "", None),
        ("DELETE", f"/v1/responses/{response_id}", "", None),
    ]
    for number, (method, path, query, body) in enumerate(calls, 1):
        parent = f"{number:016x}"
        seen = exchange(setup.key, body, traceparent(parent), path=path, method=method, query=query)
        assert seen.status == 200, (path, seen.body)

        span = child_of(django_traced, parent)
        assert (span.kind, span.scope) == ("server", "opentelemetry.instrumentation.django"), path
        assert span.name.startswith(f"{method} v1/"), span.name
        assert span.attributes["siraya.key_prefix"] == setup.api_key.prefix
        # Captured headers: the key is redacted, whatever the operator's capture list.
        assert span.attributes["http.request.header.authorization"] == ["[REDACTED]"]
        assert setup.key not in repr(span.attributes)
