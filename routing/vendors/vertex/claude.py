"""Anthropic Claude on Vertex AI: ``streamRawPredict`` / ``rawPredict`` with Messages bodies.

Request: the Anthropic Messages request without ``model``, plus ``anthropic_version``;
``max_tokens`` is required, so the router model's ceiling stands in when the client set none.
Answer: Anthropic SSE events. Input tokens come from ``message_start`` (its ``output_tokens``
is a placeholder), cumulative output tokens from ``message_delta``.
"""

from __future__ import annotations

from typing import Any

import orjson

from routing.errors import UpstreamError, invalid
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
from routing.vendors.vertex import messages as m

ANTHROPIC_VERSION = "vertex-2023-10-16"
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
TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}


def method(stream: bool) -> str:
    return "streamRawPredict" if stream else "rawPredict"


def body(call: UpstreamCall, stream: bool) -> dict[str, Any]:
    params = call.request.params
    system, turns = _messages(call.request.messages)
    payload: dict[str, Any] = {
        "anthropic_version": ANTHROPIC_VERSION,
        "messages": turns,
        "max_tokens": call.completion_limit,
    }
    if system:
        payload["system"] = system
    if stream:
        payload["stream"] = True
    for name in ("temperature", "top_p"):
        if params.get(name) is not None:
            payload[name] = params[name]
    stops = m.stop_sequences(params.get("stop"))
    if stops:
        payload["stop_sequences"] = stops
    functions = m.function_tools(params.get("tools"))
    if functions:
        payload["tools"] = [_tool(f) for f in functions]
    tool_choice = _tool_choice(params.get("tool_choice"), params.get("parallel_tool_calls"))
    if tool_choice:
        payload["tool_choice"] = tool_choice
    return payload


def _messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message["role"] in ("system", "developer"):
            text = m.text_of(message.get("content"))
            if text:
                system.append({"type": "text", "text": text})
            continue
        role = "assistant" if message["role"] == "assistant" else "user"
        blocks = _blocks(message, where)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # tool results of parallel calls share one user turn
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise invalid("'messages' must hold at least one non-system message for Claude.", "messages")
    return system, turns


def _blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if message["role"] in ("tool", "function"):
        tool_use_id = message.get("tool_call_id")
        if not tool_use_id:
            raise invalid(f"'{where}.tool_call_id' is required.", f"{where}.tool_call_id", "missing")
        return [{"type": "tool_result", "tool_use_id": tool_use_id, "content": m.text_of(message.get("content"))}]
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(m.parts_of(message.get("content"), where)):
        if part["type"] == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
            continue
        kind, mime, value = m.image_source(part, f"{where}.content[{j}]")
        source = (
            {"type": "base64", "media_type": mime, "data": value} if kind == "data" else {"type": "url", "url": value}
        )
        blocks.append({"type": "image", "source": source})
    for j, call in enumerate(message.get("tool_calls") or ()):
        blocks.append({
            "type": "tool_use",
            "id": call.get("id"),
            "name": (call.get("function") or {}).get("name"),
            "input": m.tool_arguments(call, f"{where}.tool_calls[{j}]"),
        })  # fmt: skip
    return blocks


def _tool(function: dict[str, Any]) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        tool["description"] = function["description"]
    schema = function.get("parameters")
    tool["input_schema"] = schema if isinstance(schema, dict) and schema else {"type": "object", "properties": {}}
    return tool


def _tool_choice(tool_choice: Any, parallel: Any) -> dict[str, Any] | None:
    if tool_choice is None and parallel is not False:
        return None
    name = m.named_tool(tool_choice)
    if name:
        choice: dict[str, Any] = {"type": "tool", "name": name}
    elif tool_choice is None or tool_choice in TOOL_CHOICES:
        choice = {"type": TOOL_CHOICES[tool_choice or "auto"]}
    else:
        raise invalid("'tool_choice' must be 'auto', 'required', 'none' or a named function.", "tool_choice")
    if parallel is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return choice


# -- answers ----------------------------------------------------------------------------------


def usage(data: Any, vendor_name: str, *, with_output: bool) -> Usage:
    """Anthropic usage to router usage: its input excludes cache reads and writes, OpenAI's does not."""
    if not isinstance(data, dict):
        return Usage()

    def count(field: str) -> int | None:
        return vendor_token_count(data.get(field), vendor_name, field)

    prompt = count("input_tokens")
    cache_read = count("cache_read_input_tokens") or 0
    if prompt is not None:
        prompt += cache_read + (count("cache_creation_input_tokens") or 0)
    return Usage(
        prompt_tokens=prompt,
        # message_start's output_tokens is a placeholder: not read there.
        completion_tokens=count("output_tokens") if with_output else None,
        cached_tokens=cache_read,
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


class StreamState:
    """Turns Anthropic SSE events into router events."""

    def __init__(self, vendor_name: str) -> None:
        self.vendor_name = vendor_name
        self.tool_index: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index
        self.role_sent = False
        self.done = self.finished = False  # message_stop came

    def events(self, payload: dict[str, Any]) -> list[StreamEvent]:
        kind = payload.get("type")
        if kind == "error":
            raise error_from_event(self.vendor_name, payload.get("error"))
        if kind == "message_start":
            # Its output_tokens is a placeholder (often 1): only the input figure counts.
            return [UsageEvent(usage(_dict(payload.get("message")).get("usage"), self.vendor_name, with_output=False))]
        if kind == "content_block_start":
            return self._chunk(self._block_start(payload))
        if kind == "content_block_delta":
            return self._chunk(self._block_delta(payload))
        if kind == "message_delta":
            events: list[StreamEvent] = [UsageEvent(usage(payload.get("usage"), self.vendor_name, with_output=True))]
            reason = (payload.get("delta") or {}).get("stop_reason")
            if reason:
                finish = STOP_REASONS.get(reason, "stop")
                events.append(ChunkEvent([{"index": 0, "delta": {}, "finish_reason": finish}]))
            return events
        if kind == "message_stop":
            self.done = self.finished = True
        return []  # ping, content_block_stop, and event types added later

    def _chunk(self, delta: dict[str, Any]) -> list[StreamEvent]:
        if not delta:
            return []
        if not self.role_sent:
            delta, self.role_sent = {"role": "assistant", **delta}, True
        return [ChunkEvent([{"index": 0, "delta": delta, "finish_reason": None}])]

    def _block_start(self, payload: dict[str, Any]) -> dict[str, Any]:
        block = payload.get("content_block") or {}
        if block.get("type") == "tool_use":
            index = self.tool_index[payload.get("index", 0)] = len(self.tool_index)
            call = {"index": index, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": ""}}  # fmt: skip
            return {"tool_calls": [call]}
        if block.get("type") == "text" and block.get("text"):
            return {"content": block["text"]}
        return {}

    def _block_delta(self, payload: dict[str, Any]) -> dict[str, Any]:
        delta = payload.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return {"content": delta["text"]}
        if kind == "thinking_delta" and delta.get("thinking"):
            return {"reasoning_content": delta["thinking"]}
        if kind == "input_json_delta" and delta.get("partial_json"):
            index = self.tool_index.get(payload.get("index", 0))
            if index is not None:
                return {"tool_calls": [{"index": index, "function": {"arguments": delta["partial_json"]}}]}
        return {}


def completion(vendor_name: str, payload: Any) -> Completion:
    if not isinstance(payload, dict):
        raise UpstreamError(502, f"Vendor '{vendor_name}' sent an answer that is not an object.", "upstream_malformed")
    if payload.get("type") == "error":
        raise error_from_event(vendor_name, payload.get("error"))
    text, reasoning = "", ""
    calls: list[dict[str, Any]] = []
    for block in payload.get("content") or ():
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
    return Completion([{"index": 0, "message": message, "finish_reason": finish}], found)
