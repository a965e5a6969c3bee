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

Through a database outage (``billing.outage``): ``authenticate`` and ``admit`` wait for the
database at most ``SIRAYA_DB_UNAVAILABLE_SECONDS``, then raise ``DatabaseUnavailable`` (an
admission that lands after that is settled at once as refused, billed nothing); or, with
``SIRAYA_ADMIT_DURING_OUTAGE=journal``, admit against the journal (``billing.outage_admission``:
the ticket's record id is 0 and its writes follow its admission line there). ``checkpoint``,
``settle`` and ``reject`` never fail nor wait longer than that for an outage: a write the
database does not take is kept and retried until it does (``billing.pending``), and
``settle`` returns what it will bill.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from channels.db import database_sync_to_async
from django.db import IntegrityError

from billing import bounded, journal, outage, outage_admission, records
from billing.admission import DEFAULT_API, Admission, Rejection, request_admit, request_reject
from billing.counting import ask_counted, counting_pool, outcome_counted, outcome_counted_here
from billing.credit import Ask
from billing.errors import DatabaseUnavailable, LimiterUnavailable
from billing.models import UsageStatus
from billing.pending import pending
from billing.ratelimit import RateCharge, rate_limit_acquire
from billing.selectors import KeyInfo, api_key_cached, api_key_check, authorization_hash
from billing.settlement import (
    Checkpoint,
    Outcome,
    Settlement,
    settlement_estimate,
    usage_record_checkpoint,
    usage_record_settle,
)
from billing.streams import StreamSlot, stream_slot_acquire
from billing.terms import Answerer, ModelTerms
from billing.writer import group_committed
from lib import tracing

__all__ = ["Admission", "Checkpoint", "Ledger", "Outcome", "Rejection", "Settlement", "Ticket", "ledger"]

_admit = group_committed(request_admit)
_settle = group_committed(usage_record_settle)
_reject = group_committed(request_reject)
T = TypeVar("T")
_checkpoint = database_sync_to_async(usage_record_checkpoint)


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
    def __init__(self) -> None:
        # Key loads under way, by key hash: the requests that miss the cache while one runs
        # share its answer. Without it, the moment a busy key's cache entry expires every
        # request of it in flight queries the database on a thread of its own.
        self._loading: dict[str, asyncio.Future[KeyInfo | None]] = {}

    async def authenticate(self, authorization: str) -> KeyInfo:
        """Return the key an ``Authorization`` header names, or raise ``KeyRefused``."""
        key_hash = authorization_hash(authorization)
        hit, info = api_key_cached(key_hash)
        if not hit:
            info = await self._key_loaded(key_hash)
        return api_key_check(info)

    async def _key_loaded(self, key_hash: str) -> KeyInfo | None:
        loading = self._loading.get(key_hash)
        if loading is None or loading.get_loop() is not asyncio.get_running_loop():
            loading = asyncio.ensure_future(outage_admission.key_loaded(key_hash))
            self._loading[key_hash] = loading
            loading.add_done_callback(functools.partial(self._loaded, key_hash))
        # Shielded: a request that goes away does not cancel the load the others wait for.
        return await asyncio.shield(loading)

    def _loaded(self, key_hash: str, loading: asyncio.Future[KeyInfo | None]) -> None:
        if self._loading.get(key_hash) is loading:
            del self._loading[key_hash]
        if not loading.cancelled():
            loading.exception()  # retrieved: a failure every waiter left before is not "never retrieved"

    async def admit(
        self,
        key: KeyInfo,
        generation_id: str,
        models: Sequence[ModelTerms],
        ask: Ask,
        *,
        streamed: bool,
        answerer: Answerer | None = None,
        api: str = DEFAULT_API,
    ) -> Ticket:
        """Admit a request for ``models[0]`` (the rest: its fallback models), or raise a refusal.
        ``api``: the client API it came through, as its record says it (a ``UsageApi`` value)."""
        if not tracing.ENABLED:
            return await self._admit(key, generation_id, models, ask, streamed, answerer, "", api)
        with tracing.span("ledger.admit", {"siraya.generation_id": generation_id}) as span:
            trace_id = tracing.trace_id(span)
            return await self._admit(key, generation_id, models, ask, streamed, answerer, trace_id, api)

    async def _admit(
        self,
        key: KeyInfo,
        generation_id: str,
        models: Sequence[ModelTerms],
        ask: Ask,
        streamed: bool,
        answerer: Answerer | None,
        trace_id: str,
        api: str,
    ) -> Ticket:
        ask = await ask_counted(key, models[0], ask)  # before admission: never in the writer
        rate, ask = await rate_limit_acquire(key, models[0], ask, generation_id)
        slot = None
        try:
            if streamed:
                slot = await stream_slot_acquire(key.id, key.max_concurrent_streams)
            admission = await _admission(key, generation_id, models, ask, streamed, answerer, trace_id, api)
        except BaseException as refusal:
            if slot is not None:
                await asyncio.shield(slot.release())
            if rate is not None:
                # Refused: it used no tokens. When the router is at fault, the charge goes whole.
                undo = rate.release() if isinstance(refusal, LimiterUnavailable) else rate.settle(0)
                await asyncio.shield(undo)
            raise
        return Ticket(admission, rate, slot)

    async def reject(
        self, key: KeyInfo, generation_id: str, model_name: str, rejection: Rejection, api: str = DEFAULT_API
    ) -> None:
        """Record a request refused before admission, as its client was answered (kept through an outage)."""
        trace_id = tracing.trace_id() if tracing.ENABLED else ""
        kept = journal.reject_write(key.id, generation_id, model_name, rejection, trace_id, api)
        if _keep_now(kept):
            return
        rejected = _reject(key, generation_id, model_name, rejection, trace_id, api)
        written = bounded.written(rejected, lambda: kept, lambda: None)
        try:
            await asyncio.shield(written)
        except IntegrityError:
            pass  # its admission landed after the bound and was settled as this refusal: one record

    async def checkpoint(self, ticket: Ticket, checkpoint: Checkpoint) -> None:
        """Store what a running stream has delivered so far (recovery bills it if the process dies)."""
        if checkpoint.messages is not None and checkpoint.prompt_tokens is None:
            counted = await counting_pool().messages(checkpoint.messages, checkpoint.encoding, checkpoint.tools)
            checkpoint = replace(checkpoint, prompt_tokens=counted)
        if not ticket.record_id:  # admitted against the journal: its writes follow its admission there
            pending.keep(journal.checkpoint_write(0, checkpoint, ticket.generation_id))
            return
        kept = journal.checkpoint_write(ticket.record_id, checkpoint)
        if _keep_now(kept):
            return
        await bounded.written(
            asyncio.ensure_future(_checkpoint(ticket.record_id, checkpoint)), lambda: kept, lambda: None
        )

    async def settle(self, ticket: Ticket, outcome: Outcome) -> Settlement:
        """Bill ``outcome``, close the record, free what the ticket holds; exactly once, through a
        cancel, and through a database outage (the write is kept; the figures it will bill are returned)."""
        if not tracing.ENABLED:
            return await self._settle_once(ticket, outcome)
        with tracing.span("ledger.settle", {"siraya.generation_id": ticket.generation_id}) as span:
            settlement = await self._settle_once(ticket, outcome)
            span.set_attributes({"siraya.cost_usd": str(settlement.cost), "siraya.status": outcome.status})
            return settlement

    async def _settle_once(self, ticket: Ticket, outcome: Outcome) -> Settlement:
        counted = outcome_counted_here(outcome)
        if counted is not None and ticket.rate is None and ticket.slot is None and ticket.record_id:
            # The usual request: the write is queued now, and its future is shielded (no task).
            return await asyncio.shield(_settled(ticket.record_id, counted))
        return await asyncio.shield(self._settle(ticket, counted or outcome))

    async def _settle(self, ticket: Ticket, outcome: Outcome) -> Settlement:
        try:
            outcome = await outcome_counted(outcome)  # before the write is queued: never in the writer
            if ticket.record_id:
                settlement = await _settled(ticket.record_id, outcome)
            else:  # admitted against the journal: its settlement follows its admission there
                settlement = outage_admission.settle(ticket.admission, outcome)
            if ticket.rate is not None:
                await ticket.rate.settle(settlement.billed_tokens)
            return settlement
        finally:
            if ticket.slot is not None:
                await ticket.slot.release()


def _keep_now(write: journal.Write) -> bool:
    """Keep ``write`` without trying the database when writes are queued already (they land
    in order) or the database's last word was a failure; return whether it was kept."""
    if pending.busy() or outage.seems_down():
        pending.keep(write)
        return True
    return False


def _settled(record_id: int, outcome: Outcome) -> asyncio.Future[Settlement]:
    """Settle through the group commit; through an outage, keep the write and resolve to what it will bill."""
    opened = records.opened.get(record_id)  # its prices, before the writer takes them

    def estimate() -> Settlement:
        return settlement_estimate(outcome, opened)

    def kept() -> journal.Write:
        return journal.settle_write(record_id, outcome)

    if pending.busy() or outage.seems_down():
        pending.keep(kept())
        future: asyncio.Future[Settlement] = asyncio.get_running_loop().create_future()
        future.set_result(estimate())
        return future
    return bounded.written(_settle(record_id, outcome), kept, estimate)


async def _admission(
    key: KeyInfo,
    generation_id: str,
    models: Sequence[ModelTerms],
    ask: Ask,
    streamed: bool,
    answerer: Answerer | None,
    trace_id: str,
    api: str,
) -> Admission:
    """Open the request's record; with ``SIRAYA_ADMIT_DURING_OUTAGE=journal``, in the journal
    while the database is away (``billing.outage_admission``)."""
    if not outage.admits_during_outage():
        return await _admitted(_admit(key, generation_id, models, streamed, ask, answerer, trace_id, api))
    if outage.seems_down():
        return await outage_admission.admit(key, generation_id, models, ask, streamed, answerer, trace_id, api)
    future = _admit(key, generation_id, models, streamed, ask, answerer, trace_id, api)
    try:
        try:
            return await bounded.bounded(future)
        except DatabaseUnavailable:
            # Admitted there, its admission landing late is the same record: the journal's insert finds it.
            return await outage_admission.admit(key, generation_id, models, ask, streamed, answerer, trace_id, api)
    except BaseException:
        future.add_done_callback(_refused_late)  # refused or cancelled: a late landing bills nothing
        raise


async def _admitted(future: asyncio.Future[Admission]) -> Admission:
    """Await an admission for at most the outage bound (``DatabaseUnavailable`` after it). One
    that lands later, its client already refused, is settled at once as refused: nothing billed."""
    try:
        return await bounded.bounded(future)
    except BaseException:
        future.add_done_callback(_refused_late)
        raise


_REFUSED_LATE = Outcome(
    status=UsageStatus.ERROR,
    http_status=503,
    error_code="database_unavailable",
    error_message="The database took the admission after its client had been refused; nothing was billed.",
    prompt_tokens=0,
    delivered_tokens=0,
)


def _refused_late(future: asyncio.Future[Admission]) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    pending.keep(journal.settle_write(future.result().record_id, _REFUSED_LATE))


ledger = Ledger()
