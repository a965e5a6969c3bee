"""Counting what a stream hands the client: checkpoints of delivered tokens, and ``max_tokens``.

With a token limit (``max_tokens``), each piece is counted as it passes (a short piece on
the event loop, a large one in a worker thread) and the piece that crosses the limit is cut.
Without one, pieces are only counted when a checkpoint may be due: the settled record counts
the whole delivered text anyway, so most streams (shorter than a checkpoint interval) are
never counted on the event loop at all. Every ``SIRAYA_CHECKPOINT_SECONDS`` or
``SIRAYA_CHECKPOINT_TOKENS``, whichever comes first, the count is written to the usage record
in the background: one write in flight per stream at most, never a database hop per chunk,
and the stream never waits for it. If the process dies, recovery bills the last checkpoint
(``billing.recovery``).

The count is the sum of the pieces' token counts; vendors cut deltas at token boundaries,
so it matches the count of the whole text (the settled record recounts the whole text).

The cut at ``max_tokens`` is a safety net for vendors that ignore the limit, not the limit
itself: the vendor counts with its own tokenizer, so an answer it ended within its limit may
count more with the router's. The router cuts only past ``cut_threshold(limit)`` (the limit
plus a margin for tokenizer differences), and counts only the text the vendor counts against
that limit (ModelArk's ``max_tokens`` leaves the chain of thought out). The piece that crosses
the threshold is truncated to it, and the relay ends the stream with ``finish_reason: length``;
the answer is billed for what was delivered.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings

from billing.counting import usage_record_checkpoint_counted
from billing.services import Checkpoint
from lib import tokens
from routing.canonical import ChatRequest
from routing.relay import wire
from routing.selectors import Target
from routing.vendors import adapter_class

logger = logging.getLogger("siraya.relay")

# The first checkpoint's prompt is counted before the write, off asgiref's shared thread.
_checkpoint = usage_record_checkpoint_counted
# Pieces longer than this (characters) are counted in a worker thread, off the event loop.
_INLINE_COUNT_CHARS = 16 * 1024
# Background checkpoint writes in flight, kept referenced until they finish.
_writes: set[asyncio.Task[None]] = set()
_TEXT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")
_ANSWER_FIELDS = ("content", "refusal")
_REASONING_FIELDS = ("reasoning_content", "reasoning")
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
    return _TEXT_FIELDS if counts_reasoning else _ANSWER_FIELDS


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


@dataclass(slots=True)
class Piece:
    """One chunk's choices as they may be relayed, and the tokens they carry."""

    choices: list[dict[str, Any]]
    tokens: int
    text: str  # the billable text (``wire.delivered_text``)
    exhausted: bool = False  # the token limit is reached: end the stream after this piece


@dataclass(slots=True)
class DeliveryMeter:
    record_id: int
    request: ChatRequest
    target: Target
    encoding: str
    vendor_prompt: Callable[[], int | None]
    limit: int | None = None
    threshold: int | None = None  # ``cut_threshold(limit)``
    tokens: int = 0  # delivered to the client so far (counted)
    measured: int = 0  # limited tokens passed through ``measure`` so far (measured before sent)
    indexes: set[int] = field(default_factory=set)
    # Delivered pieces not counted yet (no token limit: counted when a checkpoint may be due).
    _uncounted: list[str] = field(default_factory=list)
    _uncounted_chars: int = 0
    _saved_tokens: int = 0
    _saved_at: float = 0.0
    _first: bool = True
    _pending: asyncio.Task[None] | None = None
    _closed: bool = False

    def __post_init__(self) -> None:
        self.limit = token_limit(self.request)
        self.threshold = None if self.limit is None else cut_threshold(self.limit)
        self._saved_at = asyncio.get_running_loop().time()

    def piece(self, choices: list[dict[str, Any]]) -> Piece:
        """A chunk's billable text, not counted (no token limit: ``delivered`` counts when a checkpoint may be due)."""
        return Piece(choices, 0, wire.delivered_text(choices))

    async def measure(self, choices: list[dict[str, Any]]) -> Piece:
        """Count a chunk's billable text; cut it where the limited text passes the cut threshold."""
        for choice in choices:
            if isinstance(choice.get("index"), int):
                self.indexes.add(choice["index"])
        if self.threshold is None:
            return self.piece(choices)
        text = wire.delivered_text(choices)
        counts_reasoning = limit_counts_reasoning(self.request, self.target)
        fields = limited_fields(counts_reasoning)
        if counts_reasoning:
            count = limited = await self._count(text)
        else:
            limited = await self._count(field_text(choices, fields))
            count = limited + await self._count(field_text(choices, _REASONING_FIELDS))
        if self.measured + limited <= self.threshold:
            self.measured += limited
            return Piece(choices, count, text)
        clipped = clip_choices(choices, self.threshold - self.measured, self.encoding, fields)
        clipped_text = wire.delivered_text(clipped)
        count = await self._count(clipped_text)
        self.measured = self.threshold
        return Piece(clipped, count, clipped_text, exhausted=True)

    def length_choices(self) -> list[dict[str, Any]]:
        """The closing chunk's choices when the limit cut the stream (``measure`` noted the indexes)."""
        return [{"index": i, "delta": {}, "finish_reason": "length"} for i in sorted(self.indexes or {0})]

    async def _count(self, text: str) -> int:
        if len(text) <= _INLINE_COUNT_CHARS:
            return tokens.count_text(text, self.encoding)
        return await asyncio.to_thread(tokens.count_text, text, self.encoding)

    def delivered(self, count: int, uncounted: list[str] | None = None) -> None:
        """Note tokens (and not yet counted texts) handed to the client; start a checkpoint write when one is due."""
        self.tokens += count
        if uncounted:
            self._uncounted += uncounted
            self._uncounted_chars += sum(map(len, uncounted))
        if self._closed or (self._pending is not None and not self._pending.done()):
            return
        now = asyncio.get_running_loop().time()
        if self._uncounted and (
            self._uncounted_chars >= settings.SIRAYA_CHECKPOINT_TOKENS
            or now - self._saved_at >= settings.SIRAYA_CHECKPOINT_SECONDS
        ):
            # Counted once the characters reach the token threshold (a token is usually several
            # characters) or the interval has passed; the interval bounds the wait either way.
            encoding = self.encoding
            self.tokens += sum(tokens.count_text(text, encoding) for text in self._uncounted)
            self._uncounted, self._uncounted_chars = [], 0
        new = self.tokens - self._saved_tokens
        if new >= settings.SIRAYA_CHECKPOINT_TOKENS or (
            new > 0 and now - self._saved_at >= settings.SIRAYA_CHECKPOINT_SECONDS
        ):
            self._fire(now)

    def _fire(self, now: float) -> None:
        target = self.target
        checkpoint = Checkpoint(
            self.tokens,
            vendor_prompt_tokens=self.vendor_prompt(),
            encoding=self.encoding,
            deployment_id=target.deployment_id,
            vendor_id=target.vendor.id,
            vendor_name=target.vendor.name,
            upstream_model=target.upstream_model,
        )
        if self._first:
            checkpoint = replace(checkpoint, messages=self.request.messages, tools=self.request.params.get("tools"))
            self._first = False
        self._saved_tokens, self._saved_at = self.tokens, now
        task = asyncio.create_task(self._write(checkpoint))
        self._pending = task
        _writes.add(task)
        task.add_done_callback(_writes.discard)

    async def _write(self, checkpoint: Checkpoint) -> None:
        try:
            await _checkpoint(self.record_id, checkpoint)
        except Exception:
            # A lost checkpoint only widens what a crash could lose; the stream goes on.
            logger.exception("usage checkpoint failed", extra={"record_id": self.record_id})

    def close(self) -> None:
        """No more checkpoints: the record is about to be settled (a late write skips settled records)."""
        self._closed = True


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
    choices: list[dict[str, Any]], allowed: int, encoding: str, fields: tuple[str, ...] = _TEXT_FIELDS
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
