"""Claude's own Messages wire format, as Vertex AI (``rawPredict``) and Bedrock (``InvokeModel``) serve it.

Both clouds take Anthropic's Messages body (each with its own ``anthropic_version``) and answer
with Anthropic's message object or its stream events. This module reads those answers into
router events, and builds the native body of a request that came in Claude's format
(``ChatRequest.claude``): that body is sent as it came, so thinking blocks and their
signatures, ``cache_control`` and documents reach Claude untouched.

A native request's events carry the vendor's event as it came (``ChunkEvent.native``), beside
the canonical ``choices`` the relay counts and bills: every ``message_start``,
``content_block_*`` and ``message_delta`` becomes a chunk, even one whose ``choices`` say
nothing (a block's start or end, a signature), so that none is lost on the way.
Input tokens come from ``message_start`` (its ``output_tokens`` is a placeholder), cumulative
output tokens from ``message_delta``.
"""

from __future__ import annotations

from typing import Any

import orjson

from routing.errors import UpstreamError
from routing.vendors import http
from routing.vendors.base import (
    ChunkEvent,
    Completion,
    StreamEvent,
    UpstreamCall,
    Usage,
    UsageEvent,
    vendor_token_count,
)

STOP_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter",
}  # fmt: skip
# Anthropic error types and the HTTP status Anthropic gives each.
ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
    "timeout_error": 504, "overloaded_error": 529,
}  # fmt: skip


def is_native(call: UpstreamCall) -> bool:
    """Whether the request came as a Claude body, to be sent as it came."""
    return call.request.claude is not None


def native_body(call: UpstreamCall, anthropic_version: str) -> dict[str, Any]:
    """The client's Claude body as it came (``model`` and ``stream`` are not in it), with the cloud's ``anthropic_version``."""
    assert call.request.claude is not None
    return {**call.request.claude, "anthropic_version": anthropic_version}


def usage(data: Any, vendor_name: str, *, with_output: bool) -> Usage:
    """Anthropic usage to router usage: its input excludes cache reads and writes, OpenAI's does not."""
    if not isinstance(data, dict):
        return Usage()

    def count(field: str) -> int | None:
        return vendor_token_count(data.get(field), vendor_name, field)

    prompt = count("input_tokens")
    cache_read = count("cache_read_input_tokens") or 0
    cache_write = count("cache_creation_input_tokens") or 0
    if prompt is not None:
        prompt += cache_read + cache_write
    return Usage(
        prompt_tokens=prompt,
        # message_start's output_tokens is a placeholder: not read there.
        completion_tokens=count("output_tokens") if with_output else None,
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def error_from_event(vendor_name: str, error: Any) -> UpstreamError:
    error = error if isinstance(error, dict) else {}
    kind = str(error.get("type") or "api_error")
    status = ERROR_STATUS.get(kind, 500)
    message = str(error.get("message") or kind)[:300]
    if status in (401, 403):
        message, kind = "the vendor rejected the router's credentials", "vendor_auth_failed"
    return UpstreamError(
        http.vendor_status_to_client(status),
        f"Vendor '{vendor_name}' reported an error: {message}",
        code=kind,
        retryable=status in http.RETRYABLE_STATUSES,
        vendor_status=status,
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


_NOTHING: dict[str, Any] = {}


class StreamState:
    """Turns Anthropic stream events into router events; ``native``: each carries its vendor event."""

    def __init__(self, vendor_name: str, native: bool = False) -> None:
        self.vendor_name = vendor_name
        self.native = native
        self.tool_index: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index
        self.role_sent = False
        self.done = self.finished = False  # message_stop came

    def events(self, payload: dict[str, Any]) -> list[StreamEvent]:
        kind = payload.get("type")
        if kind == "error":
            raise error_from_event(self.vendor_name, payload.get("error"))
        if kind == "message_start":
            # Its output_tokens is a placeholder (often 1): only the input figure counts.
            found = usage(_dict(payload.get("message")).get("usage"), self.vendor_name, with_output=False)
            return [UsageEvent(found), *self._chunk(_NOTHING, payload)]
        if kind == "content_block_start":
            return self._chunk(self._block_start(payload), payload)
        if kind == "content_block_delta":
            return self._chunk(self._block_delta(payload), payload)
        if kind == "content_block_stop":
            return self._chunk(_NOTHING, payload)
        if kind == "message_delta":
            events: list[StreamEvent] = [UsageEvent(usage(payload.get("usage"), self.vendor_name, with_output=True))]
            reason = _dict(payload.get("delta")).get("stop_reason")
            if reason:
                finish = STOP_REASONS.get(reason, "stop")
                events.append(
                    ChunkEvent([{"index": 0, "delta": {}, "finish_reason": finish}], None, self._own(payload))
                )
            return events
        if kind == "message_stop":
            self.done = self.finished = True
        return []  # ping, and event types added later

    def _own(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        return payload if self.native else None

    def _chunk(self, delta: dict[str, Any], payload: dict[str, Any]) -> list[StreamEvent]:
        if not delta:
            if not self.native:
                return []
            return [ChunkEvent([{"index": 0, "delta": {}, "finish_reason": None}], None, payload)]
        if not self.role_sent:
            delta, self.role_sent = {"role": "assistant", **delta}, True
        return [ChunkEvent([{"index": 0, "delta": delta, "finish_reason": None}], None, self._own(payload))]

    def _block_start(self, payload: dict[str, Any]) -> dict[str, Any]:
        block = _dict(payload.get("content_block"))
        if block.get("type") == "tool_use":
            index = self.tool_index[payload.get("index", 0)] = len(self.tool_index)
            call = {"index": index, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": ""}}  # fmt: skip
            return {"tool_calls": [call]}
        if block.get("type") == "text" and block.get("text"):
            return {"content": block["text"]}
        return {}

    def _block_delta(self, payload: dict[str, Any]) -> dict[str, Any]:
        delta = _dict(payload.get("delta"))
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return {"content": delta["text"]}
        if kind == "thinking_delta" and delta.get("thinking"):
            return {"reasoning_content": delta["thinking"]}
        if kind == "input_json_delta" and delta.get("partial_json"):
            index = self.tool_index.get(payload.get("index", 0))
            if index is not None:
                return {"tool_calls": [{"index": index, "function": {"arguments": delta["partial_json"]}}]}
        return {}  # signature_delta, citations_delta: nothing the canonical chunk can say


def completion(vendor_name: str, payload: Any, native: bool = False) -> Completion:
    """A whole Claude answer; ``native``: the message object rides along (``Completion.native``)."""
    if not isinstance(payload, dict):
        raise UpstreamError(502, f"Vendor '{vendor_name}' sent an answer that is not an object.", "upstream_malformed")
    if payload.get("type") == "error":
        raise error_from_event(vendor_name, payload.get("error"))
    text, reasoning = "", ""
    calls: list[dict[str, Any]] = []
    for block in payload.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            text += block.get("text") or ""
        elif block.get("type") == "thinking":
            reasoning += block.get("thinking") or ""
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name", ""), "arguments": arguments}})  # fmt: skip
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    finish = STOP_REASONS.get(str(payload.get("stop_reason")), "stop")
    usage_data = payload.get("usage")
    found = usage(usage_data, vendor_name, with_output=True) if isinstance(usage_data, dict) else None
    choices = [{"index": 0, "message": message, "finish_reason": finish}]
    return Completion(choices, found, None, payload if native else None)
