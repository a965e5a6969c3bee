"""Traces of the relay: spans, their GenAI attributes and parent links, as a collector receives them.

The router runs in process with the in-repo demo vendor, or the fake OpenAI on loopback where
the vendor request's headers are the point; the spans go over OTLP/HTTP to a real receiver on
loopback (``routing.tests.tracing_helpers``, ``fakevendors.otlp``).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import orjson
import pytest
from django.test import override_settings

from billing.models import UsageRecord
from fakevendors.openai import FakeOpenAI
from lib import logs, tracing
from routing.dialects.chat.dialect import ChatCompletions
from routing.tests.tracing_helpers import (
    CHAT_APIS,
    CLIENT_SPAN,
    CLIENT_TRACE,
    DEMO,
    SECRET_WORD,
    asking,
    assert_no_content,
    chat,
    exchange,
    only,
    request_trace,
    served_by,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("writer_connection_closed")]


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
    sent = [chunk for chunk in seen.chunks if chunk == ChatCompletions.keepalive]
    assert len(keepalives) == len(sent) >= 2 and all(k.time_ns < first.time_ns for k in keepalives)
    assert attempt.attributes["gen_ai.usage.output_tokens"] == record.completion_tokens
    assert attempt.attributes["gen_ai.request.max_tokens"] == 50  # the request's parameters, as asked of the vendor
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


@pytest.mark.parametrize("path", CHAT_APIS)
def test_cancelled_stream_carries_reason_and_tokens_delivered(receiver, path):
    setup = served_by(("demo", "", {"token_delay": "0.02"}))
    long_prompt = asking(path, setup, f"tell me about {SECRET_WORD}" + " word" * 200, stream=True)
    seen = exchange(setup.key, long_prompt, leave_after=6, path=path)

    spans = request_trace(receiver, seen.generation_id, 4)
    server, attempt = only(spans, f"chat {setup.model}"), only(spans, "chat upstream-0")
    assert attempt.parent_span_id == server.span_id and server.attributes["siraya.api"] == CHAT_APIS[path]
    record = UsageRecord.objects.get(generation_id=seen.generation_id)
    assert record.status == "cancelled"
    a = server.attributes
    assert (a["siraya.cancelled"], a["siraya.cancel_reason"]) == (True, "client_disconnected")
    assert 0 < a["siraya.tokens_delivered"] == record.tokens_delivered < 100
    assert a["gen_ai.usage.output_tokens"] == record.completion_tokens
    assert a["http.response.status_code"] == 499
    assert server.status == "unset"  # a client that leaves is not the router's failure
    assert attempt.attributes["siraya.cancelled"] is True
    assert record.trace_id == server.trace_id
    assert_no_content(spans, setup.key)


@pytest.mark.parametrize("path", CHAT_APIS)
def test_fallback_shows_sibling_attempts_and_the_vendor_gets_the_attempts_traceparent(receiver, path):
    with FakeOpenAI(status=503, error_body={"error": {"message": "overloaded", "type": "server_error"}}) as down:
        setup = served_by(("openai", down.url + "/v1", {}), DEMO)
        seen = exchange(setup.key, asking(path, setup, "one two three", stream=True, temperature=0.5), path=path)
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
    assert (failed.attributes["server.address"], failed.attributes["server.port"]) == ("127.0.0.1", down.port)
    assert "overloaded" not in failed.status_message  # the vendor's words stay in the usage record
    assert answered.attributes["siraya.fallback_reason"] == "upstream_error"
    # Each attempt is an inference span with the request's parameters and the model it asks.
    assert failed.attributes["gen_ai.request.temperature"] == answered.attributes["gen_ai.request.temperature"] == 0.5
    assert (failed.attributes["gen_ai.request.model"], answered.attributes["gen_ai.request.model"]) == (
        "upstream-0",
        "upstream-1",
    )
    assert answered.status == "unset" and server.status == "unset"
    assert server.attributes["siraya.attempts"] == 2 and server.attributes["siraya.api"] == CHAT_APIS[path]
    assert server.attributes["gen_ai.provider.name"] == "demo"
    # The vendor request carried the failed attempt's span as its parent.
    version, trace_id, parent_id, flags = vendor_saw["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", server.trace_id, failed.span_id)
    assert int(flags, 16) & 1  # sampled


@pytest.mark.parametrize("path", CHAT_APIS)
def test_vendor_error_marks_the_attempt_and_the_request_failed(receiver, path):
    with FakeOpenAI(status=400, error_body={"error": {"message": "bad things", "code": "invalid_value"}}) as vendor:
        setup = served_by(("openai", vendor.url + "/v1", {}))
        seen = exchange(setup.key, asking(path, setup, f"tell me about {SECRET_WORD}"), path=path)
    assert seen.status == 400

    spans = request_trace(receiver, seen.generation_id, 4)
    server, attempt = only(spans, f"chat {setup.model}"), only(spans, "chat upstream-0")
    assert attempt.parent_span_id == server.span_id and server.attributes["siraya.api"] == CHAT_APIS[path]
    assert attempt.status == "error" and attempt.attributes["siraya.vendor_code"] == "invalid_value"
    assert server.status == "error"
    assert server.attributes["error.type"] == attempt.attributes["error.type"] == "upstream_invalid_request"
    assert server.attributes["http.response.status_code"] == 400
    assert server.attributes["siraya.cancelled"] is False
    assert UsageRecord.objects.get(generation_id=seen.generation_id).trace_id == server.trace_id
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


def test_content_is_recorded_only_when_the_operator_asks_in_the_conventions_message_schema(receiver, monkeypatch):
    monkeypatch.setattr(tracing, "CONTENT", True)
    setup = served_by(DEMO)
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found it"},
        {"role": "user", "content": [{"type": "text", "text": f"tell me about {SECRET_WORD}"}]},
    ]
    seen = exchange(setup.key, {**chat(setup), "messages": messages})
    assert seen.status == 200, seen.body

    server = only(request_trace(receiver, seen.generation_id, 4), f"chat {setup.model}")
    # Roles and parts, as OpenTelemetry's GenAI input and output message schemas have them.
    assert orjson.loads(server.attributes["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "look it up"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "lookup", "arguments": '{"q": "x"}'}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "found it"}]},
        {"role": "user", "parts": [{"type": "text", "content": f"tell me about {SECRET_WORD}"}]},
    ]  # fmt: skip
    (output,) = orjson.loads(server.attributes["gen_ai.output.messages"])
    assert (output["role"], output["finish_reason"]) == ("assistant", "stop")
    ((part,),) = [output["parts"]]
    answer = orjson.loads(seen.body)["choices"][0]["message"]["content"]
    assert (part["type"], part["content"]) == ("text", answer) and answer


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
