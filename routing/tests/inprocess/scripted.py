"""Scripted vendors: real ``VendorAdapter`` objects of kind ``scripted`` whose behaviour a test sets.

A ``Script`` says what one vendor does: yield these batches of events, then hang until cancelled
or fail with this ``UpstreamError``; it records each call and whether the adapter's ``finally``
ran (the vendor connection was closed). ``ScriptedAdapter`` is registered in
``routing.vendors.ADAPTERS`` by the ``relay`` fixture: the relay reaches it as it reaches any vendor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fakevendors.openai import words
from routing.errors import UpstreamError
from routing.vendors.base import ChunkEvent, Completion, StreamEvent, UpstreamCall, Usage, UsageEvent, VendorAdapter
from routing.vendors.http import vendor_status_to_client


@dataclass
class Script:
    """What the vendor named ``name`` does for each call, and what it saw."""

    name: str
    batches: list[list[StreamEvent]] = field(default_factory=list)
    # After the batches: wait until cancelled (``hang``), else fail with ``error`` if set.
    hang: bool = False
    error: UpstreamError | None = None
    delay: float = 0.0  # seconds before each batch
    first_delay: float = 0.0  # seconds before the first batch (and before a whole answer)
    calls: list[UpstreamCall] = field(default_factory=list)
    closed: int = 0  # calls whose ``finally`` ran: the vendor connection was released
    closed_at: float | None = None  # time.monotonic() of the last release
    yielded: int = 0  # batches handed to the relay

    def text(self) -> str:
        """Return the answer text of all batches (what a whole answer carries)."""
        return "".join(
            choice.get("delta", {}).get("content") or ""
            for batch in self.batches
            for event in batch
            if isinstance(event, ChunkEvent)
            for choice in event.choices
        )

    def usage(self) -> Usage | None:
        reported = [event.usage for batch in self.batches for event in batch if isinstance(event, UsageEvent)]
        return reported[-1] if reported else None

    def finish_reason(self) -> str | None:
        reasons = [
            choice["finish_reason"]
            for batch in self.batches
            for event in batch
            if isinstance(event, ChunkEvent)
            for choice in event.choices
            if choice.get("finish_reason")
        ]
        return reasons[-1] if reasons else None


def role_batch() -> list[StreamEvent]:
    return [ChunkEvent([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]


def word_batches(count: int, start: int = 0) -> list[list[StreamEvent]]:
    """``count`` batches of one content chunk each; every word is one token (``fakevendors.openai.WORDS``)."""
    return [
        [ChunkEvent([{"index": 0, "delta": {"content": word}, "finish_reason": None}])]
        for word in words(start + count)[start:]
    ]


def answer(
    count: int, *, usage: Usage | None = None, finish: str = "stop", role: bool = True
) -> list[list[StreamEvent]]:
    """The batches of a whole answer of ``count`` one-token words, with ``usage`` reported at the end."""
    end: list[StreamEvent] = [ChunkEvent([{"index": 0, "delta": {}, "finish_reason": finish}])]
    if usage is not None:
        end.append(UsageEvent(usage))
    return [*([role_batch()] if role else []), *word_batches(count), end]


def answer_text(count: int) -> str:
    return "".join(words(count))


SCRIPTS: dict[str, Script] = {}


class ScriptedAdapter(VendorAdapter):
    """A vendor that plays the ``Script`` registered under its vendor's name."""

    kind = "scripted"
    secret_names = ()

    def _script(self, call: UpstreamCall) -> Script:
        script = SCRIPTS[self.vendor.name]
        script.calls.append(call)
        return script

    async def stream(self, call: UpstreamCall) -> AsyncIterator[list[StreamEvent]]:
        script = self._script(call)
        try:
            await asyncio.sleep(script.first_delay)
            for batch in script.batches:
                if script.delay:
                    await asyncio.sleep(script.delay)
                script.yielded += 1
                yield list(batch)  # the relay clears each batch it is handed
            if script.hang:
                await asyncio.get_running_loop().create_future()
            if script.error is not None:
                raise script.error
        finally:
            script.closed += 1
            script.closed_at = time.monotonic()

    async def complete(self, call: UpstreamCall) -> Completion:
        script = self._script(call)
        try:
            await asyncio.sleep(script.first_delay)
            if script.hang:
                await asyncio.get_running_loop().create_future()
            if script.error is not None:
                raise script.error
            message = {"role": "assistant", "content": script.text()}
            choice = {"index": 0, "message": message, "finish_reason": script.finish_reason() or "stop"}
            return Completion([choice], script.usage())
        finally:
            script.closed += 1
            script.closed_at = time.monotonic()


def failure(vendor_status: int = 500, *, code: str | None = None, retry_after: float | None = None) -> UpstreamError:
    """The error an HTTP vendor's adapter raises for an answer of ``vendor_status``."""
    return UpstreamError(
        vendor_status_to_client(vendor_status),
        f"scripted vendor failure {vendor_status}",
        code,
        retryable=vendor_status not in (400, 413, 422),
        retry_after=retry_after,
        vendor_status=vendor_status,
    )
