"""Tracing in a real router process: switched on by the OTEL_* variables, the client's trace
continued over HTTP, Django's pages traced by the Django instrumentation, the trace id in the
JSON access log, and the spans still buffered at exit flushed when the process stops."""

from __future__ import annotations

import time

import httpx
import orjson

from fakevendors.otlp import OtlpReceiver
from ops.tests.conftest import make_demo_cast

CHAT_TRACE, CHAT_PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
PAGE_TRACE, PAGE_PARENT = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"


def test_router_process_exports_its_traces_and_flushes_them_at_exit(server_factory, transactional_db):
    with OtlpReceiver() as receiver:
        server = server_factory(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_SERVICE_NAME": "siraya-live",
                # Nothing is exported before the process stops: the exit must flush it all.
                "OTEL_BSP_SCHEDULE_DELAY": "600000",
                "LOG_LEVEL": "INFO",
            },
            name="traced",
        )
        cast = make_demo_cast(server.url)
        response = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": cast.model, "messages": [{"role": "user", "content": "trace me"}]},
            headers={**cast.headers(), "traceparent": f"00-{CHAT_TRACE}-{CHAT_PARENT}-01"},
            timeout=30,
        )
        assert response.status_code == 200
        generation_id = response.json()["id"]
        page = httpx.get(server.url + "/admin/login/", headers={"traceparent": f"00-{PAGE_TRACE}-{PAGE_PARENT}-01"})
        assert page.status_code == 200
        assert cast.record(generation_id).trace_id == CHAT_TRACE
        time.sleep(0.2)
        assert receiver.spans == []  # still in the process's buffer

        server.stop()
        spans = receiver.wait_for(lambda spans: {s.trace_id for s in spans} >= {CHAT_TRACE, PAGE_TRACE}, timeout=10)

    chat = [s for s in spans if s.trace_id == CHAT_TRACE]
    (request,) = [s for s in chat if s.kind == "server"]
    assert request.parent_span_id == CHAT_PARENT
    assert request.attributes["siraya.generation_id"] == generation_id
    assert request.resource["service.name"] == "siraya-live"
    assert {s.name for s in chat} == {f"chat {cast.model}", "ledger.admit", "ledger.settle", "chat echo"}

    (django,) = [s for s in spans if s.trace_id == PAGE_TRACE]
    assert (django.kind, django.parent_span_id) == ("server", PAGE_PARENT)
    assert django.scope == "opentelemetry.instrumentation.django"
    assert "admin/login" in django.name

    lines = [orjson.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    (access,) = [line for line in lines if line["logger"] == "siraya.access" and line["generation_id"] == generation_id]
    assert access["trace_id"] == CHAT_TRACE
