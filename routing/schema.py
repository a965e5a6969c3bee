"""Parse and validate a chat completion request body; errors name the offending field."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from routing.errors import invalid

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
# Parameters forwarded to OpenAI-compatible vendors as they are.
PASSTHROUGH = {
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "seed", "user", "metadata", "store", "reasoning_effort",
    "service_tier", "modalities", "prediction", "verbosity", "web_search_options", "audio",
    "thinking",  # BytePlus ModelArk and other vendors' reasoning switch
}  # fmt: skip
# Parameters the router itself reads.
ROUTER_FIELDS = {"model", "messages", "stream", "stream_options", "models", "provider", "usage"}
MAX_DEPTH = 64
MAX_MESSAGES = 100_000
# Longest model name accepted; longer names are refused rather than echoed back in errors.
MAX_MODEL_NAME = 256


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    # Forwardable OpenAI parameters, validated.
    params: dict[str, Any] = field(default_factory=dict)
    # Request-level fallbacks: `models` and `provider` (see routing.selection).
    models: list[str] = field(default_factory=list)
    provider: dict[str, Any] = field(default_factory=dict)

    @property
    def max_tokens_only(self) -> bool:
        """The limit came as ``max_tokens`` alone (some vendors do not count reasoning against it)."""
        return bool(self.params.get("max_tokens")) and not self.params.get("max_completion_tokens")


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise invalid("Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        detail = "body is not valid UTF-8" if "utf-8" in str(exc).lower() else str(exc).split(":")[0]
        raise invalid(f"Request body is not valid JSON ({detail}).", code="invalid_json") from None
    if not isinstance(data, dict):
        raise invalid("Request body must be a JSON object.", code="invalid_json")
    # Nesting cannot be deeper than the count of '{' and '[' in the body (a C scan): walk the
    # parsed value only when there are more of them than the limit.
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise invalid(f"Request body is nested deeper than {MAX_DEPTH} levels.", code="invalid_json")
    return data


def _number(data: dict[str, Any], name: str, low: float, high: float) -> None:
    value = data.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(f"'{name}' must be a number.", name, "invalid_type")
    if not low <= value <= high:
        raise invalid(f"'{name}' must be between {low:g} and {high:g}; got {value}.", name)


def _positive_int(data: dict[str, Any], name: str, high: int = 10_000_000) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"'{name}' must be an integer.", name, "invalid_type")
    if not 1 <= value <= high:
        raise invalid(f"'{name}' must be between 1 and {high}; got {value}.", name)
    return value


def _shown(name: str, limit: int = 64) -> str:
    """A client-supplied name fit to quote in an error message (never megabytes of it)."""
    return name if len(name) <= limit else name[:limit] + "..."


def _tool_calls(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        raise invalid(f"'{where}.tool_calls' must be an array.", f"{where}.tool_calls", "invalid_type")
    for k, call in enumerate(value):
        at = f"{where}.tool_calls[{k}]"
        if not isinstance(call, dict):
            raise invalid(f"'{at}' must be an object.", at, "invalid_type")
        function = call.get("function")
        if function is None:
            continue
        if not isinstance(function, dict):
            raise invalid(f"'{at}.function' must be an object.", f"{at}.function", "invalid_type")
        for name in ("name", "arguments"):
            if function.get(name) is not None and not isinstance(function[name], str):
                raise invalid(f"'{at}.function.{name}' must be a string.", f"{at}.function.{name}", "invalid_type")


def _content_parts(content: list[Any], where: str) -> None:
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise invalid(f"'{where}.content[{j}]' must be an object with a 'type'.", f"{where}.content[{j}]")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise invalid(
                f"'{where}.content[{j}].text' must be a string.", f"{where}.content[{j}].text", "invalid_type"
            )


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise invalid("'messages' must be a non-empty array.", "messages", "invalid_type" if value else "missing")
    if len(value) > MAX_MESSAGES:
        raise invalid(f"'messages' has more than {MAX_MESSAGES} entries.", "messages")
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"'{where}' must be an object.", where, "invalid_type")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            shown = _shown(role) if isinstance(role, str) else type(role).__name__
            raise invalid(f"'{where}.role' must be one of {sorted(ROLES)}; got {shown!r}.", f"{where}.role")
        content = message.get("content")
        if content is None:
            if role not in ("assistant", "function") and not message.get("tool_calls"):
                raise invalid(f"'{where}.content' is required for role '{role}'.", f"{where}.content", "missing")
        elif isinstance(content, list):
            _content_parts(content, where)
        elif not isinstance(content, str):
            raise invalid(f"'{where}.content' must be a string or an array.", f"{where}.content", "invalid_type")
        _tool_calls(message.get("tool_calls"), where)
        if message.get("name") is not None and not isinstance(message["name"], str):
            raise invalid(f"'{where}.name' must be a string.", f"{where}.name", "invalid_type")
    return value


def _stop(value: Any) -> None:
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list) or len(value) > 4 or not all(isinstance(s, str) for s in value):
        raise invalid("'stop' must be a string or an array of at most 4 strings.", "stop")


def _typed(data: dict[str, Any], name: str, kind: type | tuple[type, ...], label: str) -> None:
    value = data.get(name)
    if value is not None and not isinstance(value, kind):
        raise invalid(f"'{name}' must be {label}.", name, "invalid_type")


def parse_chat_request(body: bytes) -> ChatRequest:
    data = parse_json(body)
    unknown = sorted(set(data) - PASSTHROUGH - ROUTER_FIELDS)
    if unknown:
        name = _shown(unknown[0])
        raise invalid(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")
    model = data.get("model")
    models = data.get("models")
    if models is not None:
        if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
            raise invalid("'models' must be a non-empty array of model names.", "models")
        if any(len(m) > MAX_MODEL_NAME for m in models):
            raise invalid(f"Model names are at most {MAX_MODEL_NAME} characters.", "models")
    if not isinstance(model, str) or not model:
        if models:
            model = models[0]
        else:
            raise invalid("'model' is required and must be a string.", "model", "missing")
    if len(model) > MAX_MODEL_NAME:
        raise invalid(f"'model' is at most {MAX_MODEL_NAME} characters.", "model")
    messages = _messages(data.get("messages"))
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("'stream' must be a boolean.", "stream", "invalid_type")
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("'stream_options' must be an object.", "stream_options", "invalid_type")
    include_usage = (options or {}).get("include_usage")
    if include_usage is None:
        include_usage = False
    if not isinstance(include_usage, bool):
        raise invalid(
            "'stream_options.include_usage' must be a boolean.", "stream_options.include_usage", "invalid_type"
        )
    _number(data, "temperature", 0, 2)
    _number(data, "top_p", 0, 1)
    _number(data, "presence_penalty", -2, 2)
    _number(data, "frequency_penalty", -2, 2)
    max_tokens = _positive_int(data, "max_tokens")
    max_completion = _positive_int(data, "max_completion_tokens")
    n = _positive_int(data, "n", 128)
    if n not in (None, 1):
        raise invalid("Only 'n': 1 is supported.", "n", "unsupported_value")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or abs(seed) > 2**63):
        raise invalid("'seed' must be a 64-bit integer.", "seed", "invalid_type")
    _stop(data.get("stop"))
    _typed(data, "tools", list, "an array")
    _typed(data, "tool_choice", (str, dict), "a string or an object")
    _typed(data, "response_format", dict, "an object")
    _typed(data, "user", str, "a string")
    _typed(data, "metadata", dict, "an object")
    provider = data.get("provider") or {}
    if not isinstance(provider, dict):
        raise invalid("'provider' must be an object.", "provider", "invalid_type")
    params = {k: v for k, v in data.items() if k in PASSTHROUGH}
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_completion or max_tokens,
        params=params,
        models=list(models or []),
        provider=provider,
    )
