"""OpenTelemetry tracing: off unless the environment names an OTLP endpoint.

Operators configure it with the SDK's standard variables, read by the SDK itself:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) switches it on,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` (and ``_ARG``),
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*`` and ``OTEL_PROPAGATORS`` work as in any other
service; ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keep it off. Spans go
out over OTLP/HTTP (protobuf) from a background thread (the SDK's batch processor).

``setup()`` runs once per process (``siraya_site.asgi``); the provider flushes at process
exit, or at ``shutdown()`` (lifespan shutdown). Code on the request path tests ``ENABLED``
(``if tracing.ENABLED:``) before it builds any span: with tracing off, a request pays that
one test per site, never a no-op span object.

``SIRAYA_TRACE_CONTENT=1`` lets spans carry prompt and completion text; without it they
never do. Secrets never go on a span.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["ENABLED", "CONTENT", "Span", "SpanKind", "setup", "shutdown"]

ENABLED = False
CONTENT = False  # prompt and completion text on spans (SIRAYA_TRACE_CONTENT)
DEFAULT_SERVICE_NAME = "siraya-router"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Only the headers a propagator reads are copied out of a request (W3C trace context, baggage).
_PROPAGATED = frozenset({b"traceparent", b"tracestate", b"baggage"})

_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()
_global_set = False


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``environ`` asks for tracing: an OTLP endpoint, and the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() not in ("otlp", "otlp_proto_http"):
        return False  # "none", or an exporter this router does not ship (gRPC, console)
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def setup() -> bool:
    """Start tracing if the environment asks for it; return whether it is on. Once per process."""
    global ENABLED, CONTENT, _provider, _tracer, _global_set
    if _provider is not None or not wanted():
        return ENABLED
    # The SDK and the exporter are imported only when tracing is on.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER(_ARG)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if not _global_set:  # the SDK allows one global provider per process
        trace.set_tracer_provider(provider)
        _global_set = True
    _provider = provider
    _tracer = provider.get_tracer("siraya")
    CONTENT = os.environ.get("SIRAYA_TRACE_CONTENT", "").strip().lower() in ("1", "true", "yes")
    ENABLED = True
    return True


def provider() -> TracerProvider | None:
    return _provider


def flush(timeout_ms: int = 5000) -> bool:
    """Export every finished span now; return False if the exporter did not finish in time."""
    return _provider.force_flush(timeout_ms) if _provider is not None else True


def shutdown() -> None:
    """Flush and stop tracing (process exit, lifespan shutdown); ``setup()`` may start it again."""
    global ENABLED, _provider, _tracer
    ENABLED = False
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer = None, trace.NoOpTracer()


# -- spans ----------------------------------------------------------------------------------


def incoming(headers: Iterable[tuple[bytes, bytes]]) -> Context:
    """The trace context a request's ``traceparent`` (and ``tracestate``, ``baggage``) carries."""
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _PROPAGATED}
    return propagate.extract(carrier)


def start(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, Any] | None = None,
    parent: Context | None = None,
) -> Span:
    """Start a span (a child of the current one unless ``parent`` is given); the caller ends it."""
    return _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)


def active() -> Span:
    """The current span (a non-recording one when there is none)."""
    return trace.get_current_span()


@contextmanager
def current(span: Span) -> Iterator[Span]:
    """Make ``span`` the current span inside the block; end it on the way out.

    Exceptions are not recorded here: their text may be a vendor's words or a request's
    content; callers set the error attributes they mean to show.
    """
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        otel_context.detach(token)
        span.end()


@contextmanager
def span(name: str, attributes: dict[str, Any] | None = None) -> Iterator[Span]:
    """An internal span around the block, current inside it; an exception marks it failed."""
    opened = start(name, attributes=attributes)
    with current(opened):
        try:
            yield opened
        except BaseException as exc:
            failed(opened, type(exc).__name__)
            raise


def failed(span: Span, error_type: str, description: str = "") -> None:
    """Mark ``span`` failed with ``error.type`` (a code or class name, never free text from outside)."""
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, description or error_type))


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` (and ``tracestate``) to outgoing ``headers``."""
    propagate.inject(headers)


def trace_id(span: Span | None = None) -> str:
    """The 32-hex-digit trace id of ``span`` (default: the current one) if it is sampled, else ""."""
    context = (span or trace.get_current_span()).get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return ""
    return format(context.trace_id, "032x")


def epoch_ns(loop_time: float, loop_now: float, wall_now_ns: int) -> int:
    """Unix nanoseconds of an event loop time, given the loop's now and the wall clock's now."""
    return wall_now_ns - int((loop_now - loop_time) * 1e9)
