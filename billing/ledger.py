"""The ledger: the one interface through which a request is admitted, checkpointed and settled.

    ticket = await ledger.admit(key, generation_id, models, ask, streamed=..., answerer=...)
    ledger.checkpoint(ticket, Checkpoint(...))        # a running stream, in the background
    settlement = await ledger.settle(ticket, outcome)  # exactly once, whatever happened

``admit`` counts the prompt when the key's limits need it, enters the request in the key's
rate windows, takes a stream slot, holds the worst-case cost and opens the usage record, in
that order; a refusal undoes what was taken and raises a ``billing.errors.BillingRefusal``
with nothing written, and the caller records it with ``reject`` (with the status its client
got). ``settle`` counts what the vendor did not report, closes the record, corrects the rate
charge and frees the slot; it runs to the end even when the caller is cancelled.

Behind it: token counting off the writer (``billing.counting``), the group commit of every
admission and settlement (``billing.writer``) and their hand-written SQL (``billing.hotsql``,
checked against the ORM by ``billing/tests/test_hotsql.py``).

With tracing on (``lib.tracing``), ``admit`` and ``settle`` are spans of their own, and the
request's trace id goes on its usage record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from channels.db import database_sync_to_async

from billing.admission import Admission, Rejection, request_admit, request_reject
from billing.counting import ask_counted, outcome_counted, outcome_counted_here, usage_record_checkpoint_counted
from billing.credit import Ask
from billing.errors import LimiterUnavailable
from billing.ratelimit import RateCharge, rate_limit_acquire
from billing.selectors import KeyInfo, api_key_cached, api_key_check, api_key_load, authorization_hash
from billing.settlement import Checkpoint, Outcome, Settlement, usage_record_settle
from billing.streams import StreamSlot, stream_slot_acquire
from billing.terms import Answerer, ModelTerms
from billing.writer import group_committed
from lib import tracing

__all__ = ["Admission", "Checkpoint", "Ledger", "Outcome", "Rejection", "Settlement", "Ticket", "ledger"]

_admit = group_committed(request_admit)
_settle = group_committed(usage_record_settle)
_reject = group_committed(request_reject)
_load_key = database_sync_to_async(api_key_load)


@dataclass(slots=True)
class Ticket:
    """An admitted request: its open usage record and what it holds until it is settled."""

    admission: Admission
    rate: RateCharge | None
    slot: StreamSlot | None

    @property
    def record_id(self) -> int:
        return self.admission.record_id

    @property
    def generation_id(self) -> str:
        return self.admission.generation_id

    @property
    def created(self) -> int:
        return self.admission.created

    def rate_headers(self) -> list[tuple[bytes, bytes]]:
        """The key's rate-limit figures as response headers (none for a key without limits)."""
        return [] if self.rate is None else self.rate.headers()


class Ledger:
    async def authenticate(self, authorization: str) -> KeyInfo:
        """Return the key an ``Authorization`` header names, or raise ``KeyRefused``."""
        key_hash = authorization_hash(authorization)
        hit, info = api_key_cached(key_hash)
        if not hit:
            info = await _load_key(key_hash)
        return api_key_check(info)

    async def admit(
        self,
        key: KeyInfo,
        generation_id: str,
        models: Sequence[ModelTerms],
        ask: Ask,
        *,
        streamed: bool,
        answerer: Answerer | None = None,
    ) -> Ticket:
        """Admit a request for ``models[0]`` (the rest: its fallback models), or raise a refusal."""
        if not tracing.ENABLED:
            return await self._admit(key, generation_id, models, ask, streamed, answerer, "")
        with tracing.span("ledger.admit", {"siraya.generation_id": generation_id}) as span:
            return await self._admit(key, generation_id, models, ask, streamed, answerer, tracing.trace_id(span))

    async def _admit(
        self,
        key: KeyInfo,
        generation_id: str,
        models: Sequence[ModelTerms],
        ask: Ask,
        streamed: bool,
        answerer: Answerer | None,
        trace_id: str,
    ) -> Ticket:
        ask = await ask_counted(key, models[0], ask)  # before admission: never in the writer
        rate, ask = await rate_limit_acquire(key, models[0], ask, generation_id)
        slot = None
        try:
            if streamed:
                slot = await stream_slot_acquire(key.id, key.max_concurrent_streams)
            admission = await _admit(key, generation_id, models, streamed, ask, answerer, trace_id)
        except BaseException as refusal:
            if slot is not None:
                await asyncio.shield(slot.release())
            if rate is not None:
                # Refused: it used no tokens. When the router is at fault, the charge goes whole.
                undo = rate.release() if isinstance(refusal, LimiterUnavailable) else rate.settle(0)
                await asyncio.shield(undo)
            raise
        return Ticket(admission, rate, slot)

    async def reject(self, key: KeyInfo, generation_id: str, model_name: str, rejection: Rejection) -> None:
        """Record a request refused before admission, as its client was answered."""
        trace_id = tracing.trace_id() if tracing.ENABLED else ""
        await _reject(key, generation_id, model_name, rejection, trace_id)

    async def checkpoint(self, ticket: Ticket, checkpoint: Checkpoint) -> None:
        """Store what a running stream has delivered so far (recovery bills it if the process dies)."""
        await usage_record_checkpoint_counted(ticket.record_id, checkpoint)

    async def settle(self, ticket: Ticket, outcome: Outcome) -> Settlement:
        """Bill ``outcome``, close the record, free what the ticket holds; exactly once, through a cancel."""
        if not tracing.ENABLED:
            return await self._settle_once(ticket, outcome)
        with tracing.span("ledger.settle", {"siraya.generation_id": ticket.generation_id}) as span:
            settlement = await self._settle_once(ticket, outcome)
            span.set_attributes({"siraya.cost_usd": str(settlement.cost), "siraya.status": outcome.status})
            return settlement

    async def _settle_once(self, ticket: Ticket, outcome: Outcome) -> Settlement:
        counted = outcome_counted_here(outcome)
        if counted is not None and ticket.rate is None and ticket.slot is None:
            # The usual request: the write is queued now, and its future is shielded (no task).
            return await asyncio.shield(_settle(ticket.record_id, counted))
        return await asyncio.shield(self._settle(ticket, counted or outcome))

    async def _settle(self, ticket: Ticket, outcome: Outcome) -> Settlement:
        try:
            outcome = await outcome_counted(outcome)  # before the write is queued: never in the writer
            settlement = await _settle(ticket.record_id, outcome)
            if ticket.rate is not None:
                await ticket.rate.settle(settlement.billed_tokens)
            return settlement
        finally:
            if ticket.slot is not None:
                await ticket.slot.release()


ledger = Ledger()
