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

A vendor that ignores ``max_tokens`` is cut off here: the piece that crosses the limit is
truncated to the tokens left, and the relay ends the stream with ``finish_reason: length``.
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
from routing.relay import wire
from routing.schema import ChatRequest
from routing.selectors import Target

logger = logging.getLogger("siraya.relay")

# The first checkpoint's prompt is counted before the write, off asgiref's shared thread.
_checkpoint = usage_record_checkpoint_counted
# Pieces longer than this (characters) are counted in a worker thread, off the event loop.
_INLINE_COUNT_CHARS = 16 * 1024
# Background checkpoint writes in flight, kept referenced until they finish.
_writes: set[asyncio.Task[None]] = set()
_TEXT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")


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
    tokens: int = 0  # delivered to the client so far (counted)
    measured: int = 0  # passed through ``measure`` so far (a batch is measured before it is sent)
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
        self._saved_at = asyncio.get_running_loop().time()

    def piece(self, choices: list[dict[str, Any]]) -> Piece:
        """A chunk's billable text, not counted (no token limit: ``delivered`` counts when a checkpoint may be due)."""
        return Piece(choices, 0, wire.delivered_text(choices))

    async def measure(self, choices: list[dict[str, Any]]) -> Piece:
        """Count a chunk's billable text; cut it at the token limit."""
        for choice in choices:
            if isinstance(choice.get("index"), int):
                self.indexes.add(choice["index"])
        if self.limit is None:
            return self.piece(choices)
        text = wire.delivered_text(choices)
        count = await self._count(text)
        if self.measured + count <= self.limit:
            self.measured += count
            return Piece(choices, count, text)
        clipped = clip_choices(choices, self.limit - self.measured, self.encoding)
        clipped_text = wire.delivered_text(clipped)
        count = await self._count(clipped_text)
        self.measured += count
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


def clip_answer(choices: list[dict[str, Any]], limit: int, encoding: str) -> list[dict[str, Any]] | None:
    """Return copies of a whole answer's ``choices`` with each message cut to ``limit`` tokens
    of billable text and ended for ``length``; None when no message exceeds it."""
    clipped: list[dict[str, Any]] = []
    cut = False
    for choice in choices:
        message = choice.get("message")
        if isinstance(message, dict) and tokens.count_text(wire.delivered_text([choice]), encoding) > limit:
            choice = copy.deepcopy(choice)
            _clip_delta(choice["message"], limit, encoding)
            choice["finish_reason"] = "length"
            cut = True
        clipped.append(choice)
    return clipped if cut else None


def clip_choices(choices: list[dict[str, Any]], allowed: int, encoding: str) -> list[dict[str, Any]]:
    """Return copies of ``choices`` holding at most ``allowed`` tokens of billable text."""
    left = max(0, allowed)
    clipped: list[dict[str, Any]] = []
    for choice in choices:
        choice = copy.deepcopy(choice)
        choice["finish_reason"] = None
        delta = choice.get("delta")
        if isinstance(delta, dict):
            left = _clip_delta(delta, left, encoding)
        clipped.append(choice)
    return clipped


def _clip_delta(delta: dict[str, Any], left: int, encoding: str) -> int:
    for name in _TEXT_FIELDS:
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
