"""The relay's spans and their attributes, after OpenTelemetry's GenAI semantic conventions.

    chat <model>              SERVER  one per API request, whatever the client API (its dialect)
      ledger.admit            INTERNAL
      chat <upstream model>   CLIENT  one per vendor attempt: fallbacks are siblings
      ledger.settle           INTERNAL

The server span continues the client's trace (its ``traceparent``); each attempt's span is
current while the vendor request is sent, so the request carries it, and the span the vendor's
host and port (``routing.vendors.http``). An attempt's span is the conventions' inference (or
embeddings) span: it repeats the request's parameters (``gen_ai.request.*``) the request's
span holds.
The relay calls these only when ``lib.tracing.ENABLED``. Attributes are ids, names, codes and
figures: never a key, never the vendor's words, and the prompt and completion text only with
``SIRAYA_TRACE_CONTENT``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson

from lib import logs, tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from billing.ledger import Outcome, Settlement
    from billing.selectors import KeyInfo
    from routing.canonical import ChatRequest, EmbeddingRequest
    from routing.dialects.base import ClientApi
    from routing.errors import RouterError, UpstreamError
    from routing.relay.attempts import Answering
    from routing.relay.channel import Scope
    from routing.selectors import ModelRoute, Target

OPERATION = "chat"
# gen_ai.operation.name of each client API that is not a chat (by its name).
OPERATIONS = {"embeddings": "embeddings"}
# gen_ai.provider.name: the conventions' well-known names for the vendor kinds that have one.
PROVIDERS = {"openai": "openai", "azure": "azure.ai.openai", "bedrock": "aws.bedrock", "vertex": "gcp.vertex_ai"}
# Request parameters recorded, as the conventions name them, with the type each must have.
_PARAMETERS: tuple[tuple[str, str, tuple[type, ...]], ...] = (
    ("temperature", "gen_ai.request.temperature", (int, float)),
    ("top_p", "gen_ai.request.top_p", (int, float)),
    ("frequency_penalty", "gen_ai.request.frequency_penalty", (int, float)),
    ("presence_penalty", "gen_ai.request.presence_penalty", (int, float)),
    ("seed", "gen_ai.request.seed", (int,)),
    ("n", "gen_ai.request.choice.count", (int,)),
)
# The request span's attributes an attempt's span repeats: what the vendor is asked.
_FORWARDED = ("gen_ai.request.", "gen_ai.output.type", "gen_ai.embeddings.")
# gen_ai.output.type: what a response_format asks for.
_OUTPUT_TYPES = {"text": "text", "json_object": "json", "json_schema": "json"}


def provider_name(kind: str) -> str:
    return PROVIDERS.get(kind, kind)


# -- the request ----------------------------------------------------------------------------


def request_span(dialect: ClientApi, scope: Scope) -> Span:
    """Start the server span of one API request, in the trace its ``traceparent`` names (if any)."""
    client = scope.get("client") or ("", 0)
    operation = OPERATIONS.get(dialect.name, OPERATION)
    return tracing.start(
        operation,
        "server",
        {
            "gen_ai.operation.name": operation,
            "siraya.api": dialect.name,
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "client.address": client[0],
        },
        tracing.incoming(scope.get("headers", ())),
    )


@contextmanager
def refused_at_the_door(dialect: ClientApi, scope: Scope, error: RouterError) -> Iterator[None]:
    """The server span of a request the relay refuses before reading it (a method other than
    POST, a host or HTTPS rule), current while its answer is sent."""
    span = request_span(dialect, scope)
    request_started(span)
    with tracing.current(span):
        request_refused(error)
        yield


def request_started(span: Span) -> None:
    """Put the trace id on every log line the request writes (and its access log line)."""
    logs.trace_id.set(tracing.trace_id(span) or None)


def key_known(key: KeyInfo) -> None:
    tracing.active().set_attribute("siraya.key_prefix", key.prefix)  # the key's public prefix, never the key


def client_gone() -> None:
    """The client left while its request body was being read."""
    tracing.active().set_attributes({"siraya.cancelled": True, "siraya.cancel_reason": "client_disconnected"})


def request_parsed(request: ChatRequest, generation_id: str) -> None:
    span = tracing.active()
    span.update_name(f"{OPERATION} {request.model}")
    attributes: dict[str, Any] = {
        "siraya.generation_id": generation_id,
        "gen_ai.response.id": generation_id,  # the id the client gets for its completion
        "gen_ai.request.model": request.model,
        "siraya.stream": request.stream,
    }
    attributes.update(request_parameters(request))
    if request.models[1:]:
        attributes["siraya.fallback_models"] = list(request.models[1:])
    if tracing.CONTENT:
        messages = [message_parts(message) for message in request.messages]
        attributes["gen_ai.input.messages"] = orjson.dumps(messages).decode()
    span.set_attributes(attributes)


def request_parameters(request: ChatRequest) -> dict[str, Any]:
    """The request's sampling parameters, as the conventions name them (never its text)."""
    params = request.params
    found: dict[str, Any] = {}
    if request.max_tokens is not None:
        found["gen_ai.request.max_tokens"] = request.max_tokens
    for name, attribute, kinds in _PARAMETERS:
        value = params.get(name)
        if isinstance(value, kinds) and not isinstance(value, bool):
            found[attribute] = value
    if request.top_k is not None:
        found["gen_ai.request.top_k"] = request.top_k
    stop = params.get("stop")
    if stop:
        found["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = params.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in _OUTPUT_TYPES:
        found["gen_ai.output.type"] = _OUTPUT_TYPES[response_format["type"]]
    return found


def message_parts(message: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical (OpenAI chat) message in the conventions' message schema: its role and its
    parts (text, tool calls, a tool's result; other parts, such as images, by their type only)."""
    content = message.get("content")
    if message.get("role") == "tool":
        result = content if isinstance(content, str) else "".join(_texts(content))
        return {"role": "tool", "parts": [_tool_result(message.get("tool_call_id"), result)]}
    parts: list[dict[str, Any]] = []
    if isinstance(content, str) and content:
        parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            parts.append({"type": "text", "content": part["text"]} if kind == "text" else {"type": str(kind)})
    parts.extend(_tool_call(call) for call in message.get("tool_calls") or ())
    return {"role": message.get("role", "user"), "parts": parts}


def _tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"type": "tool_call", "id": call.get("id"), "name": function.get("name", ""),
            "arguments": function.get("arguments")}  # fmt: skip


def _tool_result(call_id: str | None, result: str) -> dict[str, Any]:
    return {"type": "tool_call_response", "id": call_id, "response": result}


def _texts(content: Any) -> list[str]:
    if not isinstance(content, list):
        return []
    return [str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"]


def embedding_parsed(request: EmbeddingRequest, generation_id: str) -> None:
    span = tracing.active()
    span.update_name(f"embeddings {request.model}")
    span.set_attributes({
        "siraya.generation_id": generation_id,
        "gen_ai.response.id": generation_id,
        "gen_ai.request.model": request.model,
        "siraya.inputs": len(request.inputs),
        "gen_ai.request.encoding_formats": [request.encoding_format],
        **({"gen_ai.embeddings.dimension.count": request.dimensions} if request.dimensions else {}),
    })  # fmt: skip


def request_refused(error: RouterError) -> None:
    """A request answered with an error (refused before admission, or failed before its stream began)."""
    span = tracing.active()
    span.set_attribute("http.response.status_code", error.status)
    tracing.failed(span, error.code or "router_error", error.code or "")


def request_settled(
    outcome: Outcome, settlement: Settlement, answering: tuple[ModelRoute, Target] | None, delivery: Answering
) -> None:
    """The request's ending: who answered, the billed figures, a cancellation or an error."""
    span = tracing.active()
    attributes: dict[str, Any] = {
        "http.response.status_code": outcome.http_status or 0,
        "gen_ai.usage.input_tokens": settlement.prompt_tokens,
        "gen_ai.usage.output_tokens": settlement.completion_tokens,
        "siraya.tokens_delivered": settlement.tokens_delivered,
        # USD as a decimal string: money is never a float here.
        "siraya.cost_usd": str(settlement.cost),
        "siraya.status": outcome.status,
        "siraya.cancelled": outcome.status == "cancelled",
    }
    if answering is not None:
        target = answering[1]
        attributes.update(target_attributes(target))
        attributes["gen_ai.response.model"] = target.upstream_model
    if outcome.answered_by is not None:  # a fallback model answered
        attributes["siraya.answered_by_model"] = outcome.answered_by.name
    if outcome.finish_reason:
        attributes["gen_ai.response.finish_reasons"] = [outcome.finish_reason]
    if outcome.cached_tokens:
        attributes["gen_ai.usage.cache_read.input_tokens"] = outcome.cached_tokens
    if outcome.first_token_ms is not None:
        attributes["siraya.time_to_first_token_ms"] = outcome.first_token_ms
    if len(outcome.attempts) > 1:
        attributes["siraya.attempts"] = len(outcome.attempts)
    if tracing.CONTENT and outcome.delivered_text:
        text = {"type": "text", "content": outcome.delivered_text}
        message = {"role": "assistant", "parts": [text], "finish_reason": outcome.finish_reason or ""}
        attributes["gen_ai.output.messages"] = orjson.dumps([message]).decode()
    span.set_attributes(attributes)
    first_token_at = delivery.first_token_at
    if first_token_at is not None:
        loop_now, wall_now = delivery.channel.loop.time(), time.time_ns()
        span.add_event(
            "first_token",
            {"siraya.time_to_first_token_ms": outcome.first_token_ms or 0},
            tracing.epoch_ns(first_token_at, loop_now, wall_now),
        )
    if outcome.status == "cancelled":
        span.set_attribute("siraya.cancel_reason", outcome.error_code)
    elif outcome.status == "error":
        tracing.failed(span, outcome.error_code or "router_error", outcome.error_code)


# -- one vendor attempt ----------------------------------------------------------------------


def target_attributes(target: Target) -> dict[str, Any]:
    vendor = target.vendor
    return {
        "gen_ai.provider.name": provider_name(vendor.kind),
        "siraya.vendor": vendor.name,
        "siraya.deployment_id": target.deployment_id,
    }


def attempt_span(route: ModelRoute, target: Target, number: int, previous: dict[str, Any] | None) -> Span:
    """Start the client span of one vendor attempt (a child of the request's span)."""
    operation = "embeddings" if route.mode == "embedding" else OPERATION
    attributes = forwarded_parameters(tracing.active())  # the request's span
    attributes.update({
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": target.upstream_model,
        "siraya.model": route.name,
        "siraya.attempt": number,
        **target_attributes(target),
    })  # fmt: skip
    if previous is not None:
        # Why this is a fallback: how the previous attempt failed.
        attributes["siraya.fallback_reason"] = previous.get("code") or previous.get("outcome", "")
    return tracing.start(f"{operation} {target.upstream_model}", "client", attributes)


def forwarded_parameters(request_span: Span) -> dict[str, Any]:
    """The request parameters ``request_span`` holds that the vendor is asked too (all but the model)."""
    held: Mapping[str, Any] = getattr(request_span, "attributes", None) or {}
    return {
        name: value for name, value in held.items() if name.startswith(_FORWARDED) and name != "gen_ai.request.model"
    }


def attempt_answered(span: Span, target: Target, delivery: Answering) -> None:
    attributes: dict[str, Any] = {"gen_ai.response.model": target.upstream_model}
    usage = delivery.usage
    if usage.prompt_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
    if usage.completion_tokens is not None:
        attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
    if delivery.finish_reason:
        attributes["gen_ai.response.finish_reasons"] = [delivery.finish_reason]
    span.set_attributes(attributes)


def attempt_failed(span: Span, error: UpstreamError) -> None:
    """The vendor's failure: codes and statuses (its words stay in the usage record, redacted)."""
    if error.vendor_status is not None:
        span.set_attribute("http.response.status_code", error.vendor_status)
    if error.vendor_code:
        span.set_attribute("siraya.vendor_code", str(error.vendor_code))
    span.set_attribute("siraya.retryable", bool(error.retryable))
    tracing.failed(span, error.code or "upstream_error", error.code or "")


def attempt_cancelled(span: Span) -> None:
    span.set_attribute("siraya.cancelled", True)
