"""An OpenTelemetry collector's OTLP/HTTP trace receiver on loopback, for the tracing tests.

It accepts ``POST /v1/traces`` with an ``ExportTraceServiceRequest`` protobuf (gzip or not),
as the SDK's exporter sends it, decodes it with ``opentelemetry-proto`` and keeps every span
as a plain ``ReceivedSpan``: ids in hex, attributes as Python values, events, status, and the
resource's attributes. ``keep=False`` only counts them (a sink for the benchmark):

    python -m fakevendors.otlp        # prints "PORT <n>", then serves until stopped
"""

from __future__ import annotations

import gzip
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from fakevendors.server import Connection, FakeServer, RecordedRequest

# Span.kind in OTLP: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
# Status.code in OTLP: 0 unset, 1 ok, 2 error.
STATUSES = {0: "unset", 1: "ok", 2: "error"}


@dataclass
class ReceivedEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass
class ReceivedSpan:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[ReceivedEvent]
    status: str
    status_message: str
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""

    def event(self, name: str) -> list[ReceivedEvent]:
        return [e for e in self.events if e.name == name]


def value_of(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_of(pairs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        found[pair.key] = value_of(pair.value)
    return found


def spans_of(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=attributes_of(span.attributes),
                        events=[
                            ReceivedEvent(e.name, e.time_unix_nano, attributes_of(e.attributes)) for e in span.events
                        ],
                        status=STATUSES.get(span.status.code, str(span.status.code)),
                        status_message=span.status.message,
                        resource=resource,
                        scope=scope_spans.scope.name,
                    )
                )
    return spans


class OtlpReceiver(FakeServer):
    """``POST /v1/traces`` on loopback; ``spans`` holds every span received, in arrival order."""

    def __init__(self, keep: bool = True) -> None:
        super().__init__()
        self.keep = keep
        self.spans: list[ReceivedSpan] = []
        self.exports = 0
        self.span_count = 0

    @property
    def endpoint(self) -> str:
        """The value of ``OTEL_EXPORTER_OTLP_ENDPOINT`` that sends traces here."""
        return self.url

    async def respond(self, request: RecordedRequest, conn: Connection) -> None:
        if request.method != "POST" or request.path != "/v1/traces":
            conn.send_body(404, b"", "text/plain")
            return
        body = request.body
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        received = spans_of(export)
        self.span_count += len(received)
        if self.keep:
            self.spans.extend(received)
        self.exports += 1
        conn.send_body(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def wait_for(self, found: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until ``found(spans)`` holds; return the spans (raise if it never does)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = list(self.spans)
            if found(spans):
                return spans
            if time.monotonic() > deadline:
                names = [(s.name, s.attributes.get("siraya.generation_id")) for s in spans]
                raise AssertionError(f"spans never arrived; received: {names}")
            time.sleep(0.01)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]


def main() -> None:
    receiver = OtlpReceiver(keep=False).start()
    print(f"PORT {receiver.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    receiver.stop()
    print(f"SPANS {receiver.span_count} EXPORTS {receiver.exports}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
