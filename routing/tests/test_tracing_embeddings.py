"""Embeddings traced as GenAI ``embeddings`` operations: the server span, the ledger's and the
attempts' (``routing.tests.tracing_helpers``), a fallback and a vendor's error."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from billing.models import UsageRecord
from billing.services import api_key_create
from fakevendors.openai import FakeOpenAI
from routing.services import model_create, vendor_create
from routing.tests.tracing_helpers import Setup, assert_no_content, exchange, only, request_trace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("writer_connection_closed")]


def embedding_model(name: str, *deployments: tuple[str, str]) -> Setup:
    """An embedding model on (kind, base URL) deployments tried in order (upstream ``embed-<n>``), and a key."""
    listed = []
    for priority, (kind, url) in enumerate(deployments):
        vendor = vendor_create(f"{name}-{priority}", kind, url, credentials={"api_key": "sk-vendor-t"})
        listed.append((vendor, f"embed-{priority}", priority, 1))
    model_create(f"traced/{name}", deployments=listed, input_price=Decimal("1"), mode="embedding")
    api_key, key = api_key_create(name)
    return Setup(key, api_key, f"traced/{name}")


def embed(setup: Setup, **body: Any) -> dict[str, Any]:
    return {"model": setup.model, "input": ["a", "b"], **body}


def test_embeddings_are_traced_as_embeddings_operations(receiver):
    setup = embedding_model("embed", ("demo", ""))
    seen = exchange(setup.key, embed(setup, dimensions=4), path="/v1/embeddings")
    assert seen.status == 200

    spans = request_trace(receiver, seen.generation_id, 4)
    server = only(spans, "embeddings traced/embed")
    admit, settle, attempt = (
        only(spans, "ledger.admit"),
        only(spans, "ledger.settle"),
        only(spans, "embeddings embed-0"),
    )
    assert {s.parent_span_id for s in (admit, settle, attempt)} == {server.span_id}
    record = UsageRecord.objects.get(generation_id=seen.generation_id)
    a = server.attributes
    assert (a["gen_ai.operation.name"], a["siraya.api"], a["siraya.inputs"]) == ("embeddings", "embeddings", 2)
    assert a["gen_ai.embeddings.dimension.count"] == 4 and a["gen_ai.request.encoding_formats"] == ["float"]
    assert a["gen_ai.usage.input_tokens"] == record.prompt_tokens > 0
    assert a["siraya.key_prefix"] == setup.api_key.prefix and a["siraya.cancelled"] is False
    # The attempt is the conventions' embeddings span, with what the vendor was asked.
    assert attempt.attributes["gen_ai.operation.name"] == "embeddings"
    assert attempt.attributes["gen_ai.embeddings.dimension.count"] == 4
    assert record.trace_id == server.trace_id


def test_embeddings_fallback_is_two_sibling_attempts(receiver):
    with FakeOpenAI(status=503, error_body={"error": {"message": "overloaded", "type": "server_error"}}) as down:
        setup = embedding_model("embed-fallback", ("openai", down.url + "/v1"), ("demo", ""))
        seen = exchange(setup.key, embed(setup), path="/v1/embeddings")
        assert seen.status == 200
        vendor_saw = down.last().headers

    spans = request_trace(receiver, seen.generation_id, 5)
    server = only(spans, f"embeddings {setup.model}")
    failed, answered = only(spans, "embeddings embed-0"), only(spans, "embeddings embed-1")
    assert failed.parent_span_id == answered.parent_span_id == server.span_id and failed.end_ns <= answered.start_ns
    assert (failed.status, failed.attributes["http.response.status_code"]) == ("error", 503)
    assert answered.attributes["siraya.fallback_reason"] == failed.attributes["error.type"]
    assert server.status == "unset" and server.attributes["siraya.attempts"] == 2
    assert vendor_saw["traceparent"].split("-")[2] == failed.span_id


def test_embeddings_vendor_error_marks_the_attempt_and_the_request_failed(receiver):
    with FakeOpenAI(status=400, error_body={"error": {"message": "bad input", "code": "invalid_value"}}) as vendor:
        setup = embedding_model("embed-error", ("openai", vendor.url + "/v1"))
        seen = exchange(setup.key, embed(setup), path="/v1/embeddings")
    assert seen.status == 400

    spans = request_trace(receiver, seen.generation_id, 4)
    server, attempt = only(spans, f"embeddings {setup.model}"), only(spans, "embeddings embed-0")
    assert attempt.parent_span_id == server.span_id
    assert attempt.status == server.status == "error"
    assert server.attributes["error.type"] == attempt.attributes["error.type"] == "upstream_invalid_request"
    assert server.attributes["http.response.status_code"] == 400
    assert UsageRecord.objects.get(generation_id=seen.generation_id).trace_id == server.trace_id
    assert_no_content(spans, setup.key)
