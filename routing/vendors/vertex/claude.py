"""Anthropic Claude on Vertex AI: ``streamRawPredict`` / ``rawPredict`` with Messages bodies.

Request: the Anthropic Messages request without ``model``, plus ``anthropic_version``;
``max_tokens`` is required, so the router model's ceiling stands in when the client set none.
A request that came in Claude's own format is sent as it came (``claude_messages.native_body``);
any other is translated from the canonical request here.
Answer: Anthropic's message or its SSE events (``routing.vendors.claude_messages``).
"""

from __future__ import annotations

from typing import Any

from routing.errors import invalid
from routing.vendors.base import Completion, UpstreamCall
from routing.vendors.claude_messages import (
    ERROR_STATUS,
    STOP_REASONS,
    StreamState,
    error_from_event,
    is_native,
    native_body,
    usage,
)
from routing.vendors.claude_messages import completion as claude_completion
from routing.vendors.vertex import messages as m

__all__ = ["ERROR_STATUS", "STOP_REASONS", "StreamState", "body", "completion", "error_from_event", "method", "usage"]

ANTHROPIC_VERSION = "vertex-2023-10-16"
TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}


def method(stream: bool) -> str:
    return "streamRawPredict" if stream else "rawPredict"


def stream_state(vendor_name: str, call: UpstreamCall) -> StreamState:
    return StreamState(vendor_name, native=is_native(call))


def completion(vendor_name: str, payload: Any, call: UpstreamCall | None = None) -> Completion:
    return claude_completion(vendor_name, payload, native=call is not None and is_native(call))


def body(call: UpstreamCall, stream: bool) -> dict[str, Any]:
    if is_native(call):
        native = native_body(call, ANTHROPIC_VERSION)
        if stream:
            native["stream"] = True
        return native
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
    if call.request.top_k is not None:
        payload["top_k"] = call.request.top_k
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
