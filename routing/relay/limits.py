"""The safety net at the client's ``max_tokens``: where an answer is cut, and cutting it.

The cut at ``max_tokens`` is a safety net for vendors that ignore the limit, not the limit
itself: the vendor counts with its own tokenizer, so an answer it ended within its limit may
count more with the router's. The router cuts only past ``cut_threshold(limit)`` (the limit
plus a margin for tokenizer differences), and counts only the text the vendor counts against
that limit (ModelArk's ``max_tokens`` leaves the chain of thought out). The piece that crosses
the threshold is truncated to it, and the relay ends the stream with ``finish_reason: length``;
the answer is billed for what was delivered.
"""

from __future__ import annotations

import copy
from typing import Any

from lib import tokens
from routing.canonical import ChatRequest
from routing.selectors import Target
from routing.vendors import adapter_class

TEXT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")
ANSWER_FIELDS = ("content", "refusal")
REASONING_FIELDS = ("reasoning_content", "reasoning")
# The margin of the safety-net cut: vendors count with their own tokenizers (Claude's, Gemini's
# SentencePiece, Doubao's), the router with the model's tiktoken encoding. On English text they
# differ by well under a quarter; on Chinese or Japanese text cl100k_base counts up to about
# half again what the larger-vocabulary tokenizers count. So an answer is cut only once the
# router's count passes the limit by half, plus a few tokens for short limits, where one word
# split differently is a large share. A vendor that ignores the limit (the case the cut is for)
# is still stopped within that margin of it, and billed for what it delivered.
CUT_MARGIN_RATIO_PERCENT = 150
CUT_MARGIN_TOKENS = 16


def cut_threshold(limit: int) -> int:
    """Return the router-counted tokens past which an answer limited to ``limit`` is cut."""
    return limit * CUT_MARGIN_RATIO_PERCENT // 100 + CUT_MARGIN_TOKENS


def limit_counts_reasoning(request: ChatRequest, target: Target) -> bool:
    """Whether ``target``'s vendor counts reasoning text against the limit ``request`` sets."""
    return adapter_class(target.vendor.kind).limit_counts_reasoning(request)


def limited_fields(counts_reasoning: bool) -> tuple[str, ...]:
    """The text fields counted against the limit (tool-call arguments always are)."""
    return TEXT_FIELDS if counts_reasoning else ANSWER_FIELDS


def token_limit(request: ChatRequest) -> int | None:
    """Return the completion tokens the client allows in all (``max_tokens`` x ``n``), or None."""
    limit = choice_token_limit(request)
    n = request.params.get("n") or 1
    if limit is not None and isinstance(n, int) and n > 0:
        return limit * n
    return None


def choice_token_limit(request: ChatRequest) -> int | None:
    """Return the completion tokens the client allows per choice (``max_tokens``), or None."""
    limit = request.params.get("max_completion_tokens") or request.params.get("max_tokens")
    return limit if isinstance(limit, int) and limit > 0 else None


def clip_answer(
    choices: list[dict[str, Any]], limit: int, encoding: str, counts_reasoning: bool = True
) -> list[dict[str, Any]] | None:
    """Return copies of a whole answer's ``choices`` with each message whose limited text passes
    ``cut_threshold(limit)`` cut there and ended for ``length``; None when none passes it."""
    threshold = cut_threshold(limit)
    fields = limited_fields(counts_reasoning)
    clipped: list[dict[str, Any]] = []
    cut = False
    for choice in choices:
        message = choice.get("message")
        if isinstance(message, dict) and tokens.count_text(field_text([choice], fields), encoding) > threshold:
            choice = copy.deepcopy(choice)
            _clip_delta(choice["message"], threshold, encoding, fields)
            choice["finish_reason"] = "length"
            cut = True
        clipped.append(choice)
    return clipped if cut else None


def clip_choices(
    choices: list[dict[str, Any]], allowed: int, encoding: str, fields: tuple[str, ...] = TEXT_FIELDS
) -> list[dict[str, Any]]:
    """Return copies of ``choices`` holding at most ``allowed`` tokens of limited text (``fields``
    and tool-call arguments); other text passes whole."""
    left = max(0, allowed)
    clipped: list[dict[str, Any]] = []
    for choice in choices:
        choice = copy.deepcopy(choice)
        choice["finish_reason"] = None
        delta = choice.get("delta")
        if isinstance(delta, dict):
            left = _clip_delta(delta, left, encoding, fields)
        clipped.append(choice)
    return clipped


def field_text(choices: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    """The text of ``fields`` (and, with the answer's fields, tool-call arguments) in ``choices``."""
    parts: list[str] = []
    for choice in choices:
        delta = choice.get("delta") or choice.get("message")
        if not isinstance(delta, dict):
            continue
        parts += (value for name in fields if isinstance(value := delta.get(name), str))
        if "content" in fields:
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    parts.append(function["arguments"])
    return "".join(parts)


def _clip_delta(delta: dict[str, Any], left: int, encoding: str, fields: tuple[str, ...]) -> int:
    for name in fields:
        value = delta.get(name)
        if isinstance(value, str) and value:
            delta[name], left = _clip_text(value, left, encoding)
    for call in delta.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            function["arguments"], left = _clip_text(function["arguments"], left, encoding)
    return left


def _clip_text(text: str, left: int, encoding: str) -> tuple[str, int]:
    count = tokens.count_text(text, encoding)
    if count <= left:
        return text, left - count
    return tokens.truncate_text(text, left, encoding), 0
