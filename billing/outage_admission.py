"""Admission against the journal while the database is away (``SIRAYA_ADMIT_DURING_OUTAGE=journal``).

The default (``refuse``) answers a request that needs the database to be admitted with a 503.
In this mode a request is admitted without it, when all it needs is at hand:

- its key, from the key cache: the entry last loaded, expired or not, while the database is
  away (``key_loaded``); a key this process never loaded is refused with the 503 as before;
- its route, from the route cache likewise (``routing.routes``);
- its credit: the worst case must fit under the key's limit less what this process last knew
  the key had spent and held, plus what it admitted for the key since (``billing.known_spend``);
  a limited key this process never read is refused with the 503; one past its limit gets
  ``CreditExceeded`` (402) as usual;
- rate limits and stream slots, as usual (Redis or this process).

Its usage record is not inserted: the insert is an ``admit`` line of the journal, fsync'd before
the request goes on, and the record's checkpoints and settlement follow it there (``record_id``
0, found by generation id when written), so they land in order once the database is back, each
once (``billing.journal``). A record inserted already (an earlier replay, or the request's own
admission reaching the database after the outage bound) is not inserted again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from channels.db import database_sync_to_async
from django.conf import settings

from billing import credit, journal, known_spend, outage, records
from billing.admission import DEFAULT_API, Admission, _record_values
from billing.credit import Ask
from billing.errors import DatabaseUnavailable
from billing.models import UsageStatus
from billing.pending import pending
from billing.selectors import KeyInfo, api_key_last_known, api_key_load
from billing.settlement import Outcome, Settlement, settlement_estimate
from billing.terms import Answerer, ModelTerms

_load_key = database_sync_to_async(api_key_load)

# The record of an admission that did not go ahead after its line was kept: nothing billed.
_NOT_ADMITTED = Outcome(
    status=UsageStatus.ERROR,
    http_status=503,
    error_code="database_unavailable",
    error_message="The journal could not take the admission during a database outage; nothing was billed.",
    prompt_tokens=0,
    delivered_tokens=0,
)
_CANCELLED = Outcome(status=UsageStatus.CANCELLED, prompt_tokens=0, delivered_tokens=0)


async def key_loaded(key_hash: str) -> KeyInfo | None:
    """Load a key the cache does not hold (fresh); in this mode, while the database is away, the
    entry last loaded, however old: a key revoked meanwhile is not seen until it is back."""
    if not outage.admits_during_outage():
        return await outage.within_bound(_load_key(key_hash))
    last = api_key_last_known(key_hash)
    if last is not None and outage.seems_down():
        return last
    try:
        return await outage.within_bound(_load_key(key_hash))
    except DatabaseUnavailable:
        if last is None:
            raise
        return last


async def admit(
    key: KeyInfo,
    generation_id: str,
    models: Sequence[ModelTerms],
    ask: Ask,
    streamed: bool,
    answerer: Answerer | None,
    trace_id: str,
    api: str = DEFAULT_API,
) -> Admission:
    """Admit a request against the journal, or raise ``CreditExceeded`` or ``DatabaseUnavailable``."""
    now = records.now()
    hold = credit.NO_HOLD
    if key.credit_limit is not None:
        worst = max(credit.ask_worst_case(m, ask) for m in models)
        _credit_check(key, key.credit_limit, worst, now)
        hold = credit.Hold(worst, now + timedelta(seconds=settings.SIRAYA_RESERVATION_SECONDS))
        known_spend.admitted(key.id, generation_id, worst)  # no await since the check: no other admission between
    values = _record_values(key, generation_id, models[0], streamed, hold, answerer, now, trace_id, api)
    written = pending.keep_on_disk(journal.admit_write(values))
    try:
        on_disk = await asyncio.shield(written)
    except BaseException:
        # Cancelled while its line was written: the record lands all the same, settled as cancelled.
        _withdrawn(generation_id, _CANCELLED)
        raise
    if not on_disk:
        _withdrawn(generation_id, _NOT_ADMITTED)
        raise outage.refusal()
    return Admission(0, generation_id, models[0], int(now.timestamp()))


def _credit_check(key: KeyInfo, limit: Decimal, worst: Decimal, now: datetime) -> None:
    known = known_spend.figure(key.id)
    if known is None:
        raise outage.refusal()  # never read by this process: nothing to check the limit against
    remaining = limit - known
    if worst > remaining:
        raise credit.credit_refusal(limit, key.limit_reset, max(remaining, credit.ZERO), worst, now)


def _withdrawn(generation_id: str, outcome: Outcome) -> None:
    known_spend.withdrawn(generation_id)
    pending.keep(journal.settle_write(0, outcome, generation_id))


def settle(admission: Admission, outcome: Outcome) -> Settlement:
    """Keep the settlement (``outcome`` counted) of a record admitted against the journal; return
    what it will bill, at the prices it was admitted at (or those of the model that answered)."""
    pending.keep(journal.settle_write(0, outcome, admission.generation_id))
    settlement = settlement_estimate(outcome, admission.terms)
    known_spend.settled(admission.generation_id, settlement.cost)
    return settlement
