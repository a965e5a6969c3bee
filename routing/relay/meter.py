"""The delivery meter: what a stream hands the client, its checkpoints, and the ``max_tokens`` cut.

With a token limit (``max_tokens``), each piece is counted as it passes (a short piece on
the event loop, a large one in a worker thread) and the piece that crosses the limit is cut;
a run of text chunks (``TextRun``) that cannot reach the cut threshold by its size in bytes (a
token is at least a byte) passes uncounted until the room left runs out (``run_tokens``).
Without one, pieces are only counted when a checkpoint may be due: the settled record counts
the whole delivered text anyway, so most streams (shorter than a checkpoint interval) are
never counted on the event loop at all. Every ``SIRAYA_CHECKPOINT_SECONDS`` or
``SIRAYA_CHECKPOINT_TOKENS``, whichever comes first, the count is written to the usage record
in the background: one write in flight per stream at most, never a database hop per chunk,
and the stream never waits for it. If the process dies, recovery bills the last checkpoint
(``billing.recovery``).

With a limit the count is the sum of the pieces' counts, the runs passed uncounted counted
together; without one, the pieces not counted yet are counted together, in one tokenizer call
rather than one per piece. Vendors cut deltas at token boundaries, so either matches the count
of the whole text (the settled record recounts the whole text).

The cut itself is ``routing.relay.limits``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings

from billing.ledger import Checkpoint, Ticket, ledger
from lib import tokens
from routing.canonical import ChatRequest
from routing.relay.events import delivered_text
from routing.relay.limits import (
    REASONING_FIELDS,
    clip_choices,
    cut_threshold,
    field_text,
    limit_counts_reasoning,
    limited_fields,
    token_limit,
)
from routing.selectors import Target
from routing.vendors.base import TextRun

logger = logging.getLogger("siraya.relay")

# Pieces longer than this (characters) are counted in a worker thread, off the event loop.
_INLINE_COUNT_CHARS = 16 * 1024
# ``run_tokens``: a run that needs no count to stay within the threshold (counted later).
UNCOUNTED = -1
# Background checkpoint writes in flight, kept referenced until they finish.
_writes: set[asyncio.Task[None]] = set()


@dataclass(slots=True)
class Piece:
    """One chunk's choices as they may be relayed, and the tokens they carry."""

    choices: list[dict[str, Any]]
    tokens: int
    text: str  # the billable text (``delivered_text``)
    exhausted: bool = False  # the token limit is reached: end the stream after this piece


@dataclass(slots=True)
class DeliveryMeter:
    ticket: Ticket
    request: ChatRequest
    target: Target
    encoding: str
    vendor_prompt: Callable[[], int | None]
    limit: int | None = None
    threshold: int | None = None  # ``cut_threshold(limit)``
    tokens: int = 0  # delivered to the client so far (counted)
    measured: int = 0  # limited tokens passed through ``measure`` so far (measured before sent)
    # The answer's choice indexes (made at the first: an empty set is 216 bytes per held stream).
    indexes: set[int] | None = None
    # Delivered pieces not counted yet (no token limit: counted when a checkpoint may be due).
    _uncounted: list[str] = field(default_factory=list)
    _uncounted_chars: int = 0
    # Runs of text passed under the threshold by their bytes, not counted yet (``run_tokens``).
    _run_texts: list[str] | None = None
    _run_bytes: int = 0
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
        return Piece(choices, 0, delivered_text(choices))

    async def measure(self, choices: list[dict[str, Any]]) -> Piece:
        """Count a chunk's billable text; cut it where the limited text passes the cut threshold."""
        if self.threshold is None:
            return self.piece(choices)
        for choice in choices:  # for ``length_choices``, which only a cut needs
            if isinstance(choice.get("index"), int):
                if self.indexes is None:
                    self.indexes = set()
                self.indexes.add(choice["index"])
        if self._run_texts:
            await self._measure_uncounted_runs()
        text = delivered_text(choices)
        counts_reasoning = limit_counts_reasoning(self.request, self.target)
        fields = limited_fields(counts_reasoning)
        if counts_reasoning:
            count = limited = await self._count(text)
        else:
            limited = await self._count(field_text(choices, fields))
            count = limited + await self._count(field_text(choices, REASONING_FIELDS))
        if self.measured + limited <= self.threshold:
            self.measured += limited
            return Piece(choices, count, text)
        clipped = clip_choices(choices, self.threshold - self.measured, self.encoding, fields)
        clipped_text = delivered_text(clipped)
        count = await self._count(clipped_text)
        self.measured = self.threshold
        return Piece(clipped, count, clipped_text, exhausted=True)

    async def run_tokens(self, run: TextRun) -> int | None:
        """The tokens of a run of text chunks' texts (content only: all limited) when the whole
        run stays within the cut threshold, else None (``measure`` them chunk by chunk). Notes nothing.

        ``UNCOUNTED`` when the run cannot reach the threshold whatever it counts: a token is at
        least one byte of text in every encoding the router counts with (byte-level BPE,
        ``lib.tokens.ENCODINGS``), so a run of no more bytes than the room left, beside the runs
        not counted before it, needs no count to pass; it is counted when that room runs out
        (``_measure_uncounted_runs``) or a checkpoint may be due (``delivered``)."""
        assert self.threshold is not None
        size = sum(map(len, run.raws))  # the texts' UTF-8 bytes (they need no JSON escape)
        if self.measured + self._run_bytes + size <= self.threshold:
            return UNCOUNTED
        await self._measure_uncounted_runs()
        left = self.threshold - self.measured
        total = 0
        for text in run.texts:
            total += await self._count(text)
            if total > left:
                return None
        return total

    def measured_run(self, count: int, run: TextRun) -> None:
        """Note a run ``run_tokens`` counted (or found ``UNCOUNTED``) as handed on, as ``measure``
        notes its chunks one by one (its choice's index was noted with the chunk that started the
        answer: a limit means one choice)."""
        if count == UNCOUNTED:
            self._run_texts = (self._run_texts or []) + run.texts
            self._run_bytes += sum(map(len, run.raws))
        else:
            self.measured += count

    async def _measure_uncounted_runs(self) -> None:
        """Count the runs passed ``UNCOUNTED`` (in one call): from here on the cut needs the count."""
        if self._run_texts:
            self.measured += await self._count("".join(self._run_texts))
            self._run_texts, self._run_bytes = None, 0

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
            self.tokens += tokens.count_text("".join(self._uncounted), self.encoding)
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
            await ledger.checkpoint(self.ticket, checkpoint)
        except Exception:
            # A lost checkpoint only widens what a crash could lose; the stream goes on.
            logger.exception("usage checkpoint failed", extra={"record_id": self.ticket.record_id})

    def close(self) -> None:
        """No more checkpoints: the record is about to be settled (a late write skips settled records)."""
        self._closed = True
