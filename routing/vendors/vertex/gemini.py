"""Gemini on Vertex AI: OpenAI chat requests to ``generateContent`` bodies, and answers back.

Request: system/developer messages become ``systemInstruction``; user and tool messages
``user`` contents, assistant messages ``model`` contents (consecutive same-role contents
merged, as Gemini wants parallel function responses in one content). Answer: text parts are
content, ``thought: true`` parts reasoning, each whole ``functionCall`` part one tool-call
delta with a generated id. Usage: the last ``usageMetadata`` seen wins; thoughts are output.

Thought signatures: a ``functionCall`` part's ``thoughtSignature`` travels in its tool call
as ``extra_content.google.thought_signature`` (the field Google's own OpenAI-compatible
endpoint uses, which OpenAI SDKs keep when the message is sent back) and is put back on the
part when the call returns in the history; Gemini 3 refuses function calls without it. A
Gemini 3 request whose history holds unsigned calls (made by another model, say before a
fallback) gets Google's documented ``skip_thought_signature_validator`` on them instead.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import orjson

from routing.errors import UpstreamError, invalid
from routing.vendors import http
from routing.vendors.base import (
    ChunkEvent,
    Completion,
    UpstreamCall,
    Usage,
    UsageEvent,
    vendor_token_count,
)
from routing.vendors.vertex import messages as m

ROLES = {"user": "user", "tool": "user", "function": "user", "assistant": "model"}
TOOL_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
SKIP_SIGNATURE = "skip_thought_signature_validator"
_GENERATION = re.compile(r"gemini-(\d+)")
# Gemini's documented prompt block reasons: only these are repeated to the client.
BLOCK_REASONS = frozenset(
    ("BLOCK_REASON_UNSPECIFIED", "SAFETY", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "IMAGE_SAFETY")
)


def method(stream: bool) -> str:
    return "streamGenerateContent?alt=sse" if stream else "generateContent"


def body(call: UpstreamCall, stream: bool) -> dict[str, Any]:
    params = call.request.params
    system, contents = _contents(call.request.messages, signatures_required(call.upstream_model))
    payload: dict[str, Any] = {"contents": contents}
    if system:
        payload["systemInstruction"] = {"parts": system}
    # maxOutputTokens always: without one Gemini may write up to the model's own maximum, past
    # what the credit hold assumed (the router model's ceiling). Thinking counts against it.
    config = _generation_config(params, call.completion_limit)
    if call.request.top_k is not None:
        config["topK"] = call.request.top_k
    if config:
        payload["generationConfig"] = config
    functions = m.function_tools(params.get("tools"))
    if functions:
        payload["tools"] = [{"functionDeclarations": [_declaration(f) for f in functions]}]
    tool_config = _tool_config(params.get("tool_choice"))
    if tool_config:
        payload["toolConfig"] = tool_config
    return payload


def signatures_required(model: str) -> bool:
    """Whether the model refuses function calls without their thought signature (Gemini 3 on)."""
    found = _GENERATION.match(model)
    return found is not None and int(found.group(1)) >= 3


def _contents(messages: list[dict[str, Any]], sign_unsigned: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names = m.tool_names(messages)
    for i, message in enumerate(messages):
        role = message["role"]
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend({"text": p["text"]} for p in m.parts_of(message.get("content"), where) if p.get("text"))
            continue
        parts = _parts(message, names, where, sign_unsigned)
        if not parts:
            continue
        if contents and contents[-1]["role"] == ROLES[role]:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": ROLES[role], "parts": parts})
    if not contents:
        raise invalid("'messages' must hold at least one non-system message for Gemini.", "messages")
    return system, contents


def _parts(message: dict[str, Any], names: dict[str, str], where: str, sign_unsigned: bool) -> list[dict[str, Any]]:
    role = message["role"]
    if role in ("tool", "function"):
        name = message.get("name") if role == "function" else names.get(str(message.get("tool_call_id")))
        name = name or message.get("name")
        if not name:
            raise invalid(f"'{where}.tool_call_id' matches no earlier assistant tool call.", f"{where}.tool_call_id")
        return [{"functionResponse": {"name": name, "response": _response_object(message.get("content"))}}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(m.parts_of(message.get("content"), where)):
        if part["type"] == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
            continue
        kind, mime, value = m.image_source(part, f"{where}.content[{j}]")
        parts.append({"inlineData": {"mimeType": mime, "data": value}} if kind == "data" else
                     {"fileData": {"mimeType": mime, "fileUri": value}})  # fmt: skip
    for j, call in enumerate(message.get("tool_calls") or ()):
        name = (call.get("function") or {}).get("name")
        args = m.tool_arguments(call, f"{where}.tool_calls[{j}]")
        function_call: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        # Gemini signs the first call of a step (parallel calls share its signature).
        signature = _thought_signature(call) or (SKIP_SIGNATURE if sign_unsigned and j == 0 else None)
        if signature:
            function_call["thoughtSignature"] = signature
        parts.append(function_call)
    return parts


def _thought_signature(call: dict[str, Any]) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def _response_object(content: Any) -> dict[str, Any]:
    """A tool result as the JSON object Gemini wants: the object itself, else wrapped in ``content``."""
    text = m.text_of(content)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"content": text}
    return value if isinstance(value, dict) else {"content": value}


def _generation_config(params: dict[str, Any], max_tokens: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    for openai_name, gemini_name in (
        ("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
        ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"),
    ):  # fmt: skip
        if params.get(openai_name) is not None:
            config[gemini_name] = params[openai_name]
    stops = m.stop_sequences(params.get("stop"))
    if stops:
        config["stopSequences"] = stops
    response_format = params.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    return config


def _declaration(function: dict[str, Any]) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        declaration["description"] = function["description"]
    parameters = function.get("parameters")
    if isinstance(parameters, dict) and parameters.get("properties"):
        declaration["parameters"] = parameters  # Gemini refuses an object schema without properties
    return declaration


def _tool_config(tool_choice: Any) -> dict[str, Any] | None:
    if tool_choice is None:
        return None
    name = m.named_tool(tool_choice)
    if name:
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    if tool_choice not in TOOL_MODES:
        raise invalid("'tool_choice' must be 'auto', 'required', 'none' or a named function.", "tool_choice")
    return {"functionCallingConfig": {"mode": TOOL_MODES[tool_choice]}}


# -- answers ----------------------------------------------------------------------------------


def finish_reason(reason: str, called_functions: bool) -> str:
    if reason in FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if called_functions else "stop"


def usage(metadata: dict[str, Any], vendor_name: str) -> Usage:
    def count(field: str) -> int | None:
        return vendor_token_count(metadata.get(field), vendor_name, field)

    candidates, thoughts = count("candidatesTokenCount"), count("thoughtsTokenCount")
    completion = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    return Usage(
        prompt_tokens=count("promptTokenCount"),
        completion_tokens=completion,
        cached_tokens=count("cachedContentTokenCount") or 0,
        reasoning_tokens=thoughts or 0,
    )


def error_from_payload(vendor_name: str, error: Any) -> UpstreamError:
    """An ``{"error": {"code", "message", "status"}}`` object sent inside a 200 answer."""
    error = error if isinstance(error, dict) else {"message": str(error)}
    code = error.get("code") if isinstance(error.get("code"), int) else 500
    message = str(error.get("message") or "unknown error")[:300]
    return UpstreamError(
        http.vendor_status_to_client(code),
        f"Vendor '{vendor_name}' reported an error: {message}",
        code=str(error.get("status") or f"upstream_{code}"),
        retryable=code in http.RETRYABLE_STATUSES,
        vendor_status=code,
    )


def _blocked(vendor_name: str, payload: dict[str, Any]) -> UpstreamError | None:
    feedback = payload.get("promptFeedback") or {}
    if payload.get("candidates") or not feedback.get("blockReason"):
        return None
    reason = feedback["blockReason"]
    return UpstreamError(
        400,
        f"Vendor '{vendor_name}' blocked the prompt ({reason}); nothing was generated.",
        code="content_filter",
        note=f"block reason {reason}" if reason in BLOCK_REASONS else None,
    )


def _tool_call(part: dict[str, Any], index: int) -> dict[str, Any]:
    call = part["functionCall"]
    tool_call: dict[str, Any] = {
        "index": index,
        "id": "call_" + secrets.token_hex(12),
        "type": "function",
        "function": {"name": call.get("name", ""), "arguments": orjson.dumps(call.get("args") or {}).decode()},
    }
    signature = part.get("thoughtSignature")
    if isinstance(signature, str) and signature:
        tool_call["extra_content"] = {"google": {"thought_signature": signature}}
    return tool_call


class StreamState:
    """Turns each ``streamGenerateContent`` SSE payload into router events."""

    def __init__(self, vendor_name: str) -> None:
        self.vendor_name = vendor_name
        self.tool_calls = 0
        self.role_sent = False
        self.done = False  # Gemini sends no [DONE]: the stream just ends
        self.finished = False  # a finishReason came

    def events(self, payload: dict[str, Any]) -> list[ChunkEvent | UsageEvent]:
        if payload.get("error"):
            raise error_from_payload(self.vendor_name, payload["error"])
        blocked = _blocked(self.vendor_name, payload)
        if blocked:
            raise blocked
        events: list[ChunkEvent | UsageEvent] = []
        if payload.get("usageMetadata") and isinstance(payload["usageMetadata"], dict):
            events.append(UsageEvent(usage(payload["usageMetadata"], self.vendor_name)))
        candidate = (payload.get("candidates") or [{}])[0]
        delta = self._delta((candidate.get("content") or {}).get("parts") or [])
        if delta:
            if not self.role_sent:
                delta = {"role": "assistant", **delta}
                self.role_sent = True
            events.append(ChunkEvent([{"index": 0, "delta": delta, "finish_reason": None}]))
        if candidate.get("finishReason"):
            self.finished = True
            reason = finish_reason(candidate["finishReason"], self.tool_calls > 0)
            events.append(ChunkEvent([{"index": 0, "delta": {}, "finish_reason": reason}]))
        return events

    def _delta(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        for part in parts:
            if "functionCall" in part:
                delta.setdefault("tool_calls", []).append(_tool_call(part, self.tool_calls))
                self.tool_calls += 1
            elif part.get("text"):
                name = "reasoning_content" if part.get("thought") else "content"
                delta[name] = delta.get(name, "") + part["text"]
        return delta


def stream_state(vendor_name: str, call: UpstreamCall) -> StreamState:
    return StreamState(vendor_name)


def completion(vendor_name: str, payload: Any, call: UpstreamCall | None = None) -> Completion:
    if not isinstance(payload, dict):
        raise UpstreamError(502, f"Vendor '{vendor_name}' sent an answer that is not an object.", "upstream_malformed")
    state = StreamState(vendor_name)
    text, reasoning, finish = "", "", "stop"
    calls: list[dict[str, Any]] = []
    found_usage: Usage | None = None
    for event in state.events(payload):
        if isinstance(event, UsageEvent):
            found_usage = event.usage
            continue
        choice = event.choices[0]
        text += choice["delta"].get("content") or ""
        reasoning += choice["delta"].get("reasoning_content") or ""
        calls.extend(choice["delta"].get("tool_calls") or ())
        finish = choice["finish_reason"] or finish
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
    return Completion([{"index": 0, "message": message, "finish_reason": finish}], found_usage)
