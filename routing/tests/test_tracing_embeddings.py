"""Embeddings traced as GenAI ``embeddings`` operations: the server span, the ledger's and the
attempt's (the helpers and the OTLP receiver are ``test_tracing``'s)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.models import UsageRecord
from billing.services import api_key_create
from routing.services import model_create, vendor_create
from routing.tests.test_tracing import (  # noqa: F401  (fixtures: the receiver, the writer's connection)
    exchange,
    only,
    receiver,
    request_trace,
    writer_connection_closed,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_embeddings_are_traced_as_embeddings_operations(receiver):  # noqa: F811  (the fixture)
    vendor = vendor_create("demo-embed", "demo")
    model_create("traced/embed", deployments=[(vendor, "embed", 0, 1)], input_price=Decimal("1"), mode="embedding")
    _, key = api_key_create("embedder")
    seen = exchange(key, {"model": "traced/embed", "input": ["a", "b"], "dimensions": 4}, path="/v1/embeddings")
    assert seen.status == 200

    spans = request_trace(receiver, seen.generation_id, 4)
    server = only(spans, "embeddings traced/embed")
    admit, settle, attempt = only(spans, "ledger.admit"), only(spans, "ledger.settle"), only(spans, "embeddings embed")
    assert {s.parent_span_id for s in (admit, settle, attempt)} == {server.span_id}
    record = UsageRecord.objects.get(generation_id=seen.generation_id)
    a = server.attributes
    assert (a["gen_ai.operation.name"], a["siraya.api"], a["siraya.inputs"]) == ("embeddings", "embeddings", 2)
    assert a["gen_ai.embeddings.dimension.count"] == 4
    assert a["gen_ai.usage.input_tokens"] == record.prompt_tokens > 0
    assert attempt.attributes["gen_ai.operation.name"] == "embeddings"
    assert record.trace_id == server.trace_id
