"""What canonical events carry: the text a client is billed for, finish reasons, whether a
chunk holds any of the answer. Canonical chunks are OpenAI-shaped ``choices`` (``routing.vendors.base``)."""

from __future__ import annotations

from typing import Any

_PLAIN_DELTA = frozenset(("role", "content"))


def delivered_text(choices: list[dict[str, Any]]) -> str:
    """Text the client is billed for in a chunk: content, refusal, reasoning, tool-call arguments."""
    if len(choices) == 1:
        # The usual streamed chunk: one choice whose delta holds content (and perhaps the role).
        delta = choices[0].get("delta")
        if type(delta) is dict and delta.keys() <= _PLAIN_DELTA:
            content = delta.get("content")
            return content if type(content) is str else ""
    parts: list[str] = []
    for choice in choices:
        delta = choice.get("delta") or choice.get("message")
        if not isinstance(delta, dict):
            continue
        for name in ("content", "refusal", "reasoning_content", "reasoning"):
            value = delta.get(name)
            if isinstance(value, str) and value:
                parts.append(value)
        for call in delta.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                parts.append(function["arguments"])
    return "".join(parts)


def finish_reason(choices: list[dict[str, Any]]) -> str:
    """The last finish reason among a chunk's choices ("" when none has finished)."""
    found = ""
    for choice in choices:
        if choice.get("finish_reason"):
            found = choice["finish_reason"]
    return found


def carries_answer(choices: list[dict[str, Any]], text: str | None = None) -> bool:
    """Whether a chunk holds any of the answer (text, a tool call, or the end of it).

    ``text``: the chunk's ``delivered_text`` when the caller has it already."""
    for choice in choices:
        if choice.get("finish_reason"):
            return True
        delta = choice.get("delta") or {}
        if delta.get("tool_calls") or delta.get("function_call"):
            return True
    return bool(delivered_text(choices) if text is None else text)
