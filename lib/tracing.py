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

import importlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = ["CONTENT", "ENABLED", "setup", "shutdown"]

ENABLED = False
CONTENT = False  # prompt and completion text on spans (SIRAYA_TRACE_CONTENT)
DEFAULT_SERVICE_NAME = "siraya-router"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Only the headers a propagator reads are copied out of a request (W3C trace context, baggage).
_PROPAGATED = frozenset({b"traceparent", b"tracestate", b"baggage"})
_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
# Request headers that carry secrets (regular expressions, as OpenTelemetry's HTTP instrumentations
# read them): if an operator has the Django instrumentation capture headers
# (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST), these are always recorded as
# "[REDACTED]", whatever list the operator gave.
SANITIZE_VARIABLE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
SECRET_HEADERS = ("authorization", "api[-_]key", "cookie", "token", "secret")
logger = logging.getLogger("siraya.tracing")


class _Api:
    """OpenTelemetry's modules, imported by ``setup()``: importing them costs a process about
    0.2 s (the context and the propagators load their entry points), which a router, or a
    management command, without tracing never pays."""

    trace: Any = None
    context: Any = None
    propagate: Any = None
    kinds: dict[str, Any] = {}
    error: Any = None
    tracer: Tracer | None = None
    provider: TracerProvider | None = None
    global_set = False


_api = _Api()


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``environ`` asks for tracing: an OTLP endpoint, and the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() not in ("otlp", "otlp_proto_http"):
        return False  # "none", or an exporter this router does not ship (console, zipkin)
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def setup() -> bool:
    """Start tracing if the environment asks for it; return whether it is on. Once per process."""
    global ENABLED, CONTENT
    if _api.provider is not None or not wanted():
        return ENABLED
    _import_api()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER(_ARG)
    # The endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*; always
    # HTTP/protobuf (OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported: no gRPC exporter).
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    for name in _PROTOCOL_VARIABLES:
        if os.environ.get(name, "http/protobuf").strip() != "http/protobuf":
            logger.warning("%s=%s is not supported: traces go over OTLP/HTTP (protobuf)", name, os.environ[name])
    if not _api.global_set:  # the SDK allows one global provider per process
        _api.trace.set_tracer_provider(provider)
        _api.global_set = True
    _api.provider, _api.tracer = provider, provider.get_tracer("siraya")
    CONTENT = os.environ.get("SIRAYA_TRACE_CONTENT", "").strip().lower() in ("1", "true", "yes")
    os.environ[SANITIZE_VARIABLE] = sanitized_headers(os.environ.get(SANITIZE_VARIABLE, ""))
    ENABLED = True
    return True


def sanitized_headers(configured: str) -> str:
    """The operator's list of headers to redact, with the secret-bearing ones added."""
    fields = [field.strip() for field in configured.split(",") if field.strip()]
    return ",".join([*fields, *(field for field in SECRET_HEADERS if field not in fields)])


def _import_api() -> None:
    _api.trace = importlib.import_module("opentelemetry.trace")
    _api.context = importlib.import_module("opentelemetry.context")
    _api.propagate = importlib.import_module("opentelemetry.propagate")
    kind = _api.trace.SpanKind
    _api.kinds = {"internal": kind.INTERNAL, "server": kind.SERVER, "client": kind.CLIENT}
    _api.error = _api.trace.StatusCode.ERROR


def provider() -> TracerProvider | None:
    return _api.provider


def flush(timeout_ms: int = 5000) -> bool:
    """Export every finished span now; return False if the exporter did not finish in time."""
    return _api.provider.force_flush(timeout_ms) if _api.provider is not None else True


def shutdown() -> None:
    """Flush and stop tracing (process exit, lifespan shutdown); ``setup()`` may start it again."""
    global ENABLED
    ENABLED = False
    if _api.provider is not None:
        _api.provider.shutdown()
    _api.provider, _api.tracer = None, None


# -- spans ----------------------------------------------------------------------------------


def incoming(headers: Iterable[tuple[bytes, bytes]]) -> Context:
    """The trace context a request's ``traceparent`` (and ``tracestate``, ``baggage``) carries."""
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _PROPAGATED}
    context: Context = _api.propagate.extract(carrier)
    return context


def start(
    name: str, kind: str = "internal", attributes: dict[str, Any] | None = None, parent: Context | None = None
) -> Span:
    """Start a span of ``kind`` (internal, server, client), a child of the current one unless
    ``parent`` is given; the caller ends it. Only while tracing is on."""
    assert _api.tracer is not None
    return _api.tracer.start_span(name, context=parent, kind=_api.kinds[kind], attributes=attributes)


def active() -> Span:
    """The current span (a non-recording one when there is none)."""
    span: Span = _api.trace.get_current_span()
    return span


@contextmanager
def current(span: Span) -> Iterator[Span]:
    """Make ``span`` the current span inside the block; end it on the way out.

    Exceptions are not recorded here: their text may be a vendor's words or a request's
    content; callers set the error attributes they mean to show.
    """
    token = _api.context.attach(_api.trace.set_span_in_context(span))
    try:
        yield span
    finally:
        _api.context.detach(token)
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
    span.set_status(_api.error, description or error_type)


def outgoing(headers: MutableMapping[str, str], host: str, port: int) -> None:
    """An outgoing request in the current (client) span: name the server it goes to (host and
    port only: a URL may carry a key) and add the span's ``traceparent`` (and ``tracestate``) to
    ``headers``."""
    active().set_attributes({"server.address": host, "server.port": port})
    _api.propagate.inject(headers)


def trace_id(span: Span | None = None) -> str:
    """The 32-hex-digit trace id of ``span`` (default: the current one) if it is sampled, else ""."""
    context = (span or active()).get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return ""
    return format(context.trace_id, "032x")


def epoch_ns(loop_time: float, loop_now: float, wall_now_ns: int) -> int:
    """Unix nanoseconds of an event loop time, given the loop's now and the wall clock's now."""
    return wall_now_ns - int((loop_now - loop_time) * 1e9)
