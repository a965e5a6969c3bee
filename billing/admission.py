"""Admission of a request: hold its worst-case cost and open its usage record; or record
why it was refused. Synchronous; run in the group-commit writer (``billing.ledger``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billing import credit, hotsql, records
from billing.models import UsageApi, UsageStatus
from billing.selectors import KeyInfo
from billing.terms import Answerer, ModelTerms

DEFAULT_API: str = UsageApi.CHAT_COMPLETIONS.value


@dataclass(frozen=True, slots=True)
class Admission:
    record_id: int
    generation_id: str
    terms: ModelTerms  # the requested model's: the record starts at its prices
    created: int  # unix seconds, the `created` of every chunk


@dataclass(frozen=True, slots=True)
class Rejection:
    """How a request refused before admission is recorded: the status and code its client got."""

    http_status: int
    code: str
    message: str


def request_reject(
    key: KeyInfo, generation_id: str, model_name: str, rejection: Rejection, trace_id: str = "", api: str = DEFAULT_API
) -> None:
    """Record an authenticated request refused before admission (invalid body, limits, unknown model);
    ``trace_id``: its trace's, when tracing is on; ``api``: the client API it came through (a UsageApi value)."""
    key_request_reject(key.id, generation_id, model_name, rejection, trace_id=trace_id, api=api)


def key_request_reject(
    key_id: int,
    generation_id: str,
    model_name: str,
    rejection: Rejection,
    now: datetime | None = None,
    trace_id: str = "",
    api: str = DEFAULT_API,
) -> None:
    """``request_reject`` by the key's id, at ``now`` (a write kept through an outage: when it was refused)."""
    now = now or records.now()
    with records.atomic():
        credit.key_lock(key_id)  # same lock order as admission and settlement: key, then rows
        hotsql.record_insert(
            {
                "generation_id": generation_id,
                "api_key_id": key_id,
                "api": api,
                "model_name": model_name[:128],
                "status": UsageStatus.ERROR,
                "http_status": rejection.http_status,
                "error_code": rejection.code[:64],
                "error_message": rejection.message[:500],
                "created_at": now,
                "finished_at": now,
                "duration_ms": 0,
                **({"trace_id": trace_id} if trace_id else {}),
            }
        )
        credit.usage_day_add(key_id, now, 0, 0, credit.ZERO)


def request_admit(
    key: KeyInfo,
    generation_id: str,
    models: Sequence[ModelTerms],
    streamed: bool,
    ask: credit.Ask | None = None,
    answerer: Answerer | None = None,
    trace_id: str = "",
    api: str = DEFAULT_API,
) -> Admission:
    """Accept a request for ``models[0]``: hold its worst-case cost, open its usage record (``in_progress``).

    Raise ``CreditExceeded`` when the key's credit cannot cover the worst case, having written
    nothing (the caller records the refusal: ``request_reject``). The record starts at the
    first model's prices; settlement re-prices it at the model that answered. The hold covers
    the dearest of ``models`` (the request's fallback models). ``answerer``: the one
    deployment that can answer, when there is only one (its names are written now).
    ``trace_id``: the request's trace, when tracing is on. ``api``: the client API it came
    through (a UsageApi value).
    """
    now = records.now()
    terms = models[0]
    if key.credit_limit is None and hotsql.limit_checked_in_insert():
        # No limit as far as the key cache knows: on SQLite one INSERT that also checks the
        # key has none in the database (else it inserts nothing, and the hold is counted below).
        with records.atomic():
            values = _record_values(key, generation_id, terms, streamed, credit.NO_HOLD, answerer, now, trace_id, api)
            record_id = hotsql.record_insert_unlimited(key.id, values)
            if record_id is not None:
                _record_opened(key, record_id, values, terms, now)
                return Admission(record_id, generation_id, terms, int(now.timestamp()))
    ask = ask or credit.Ask(messages=[])
    worst = None
    if key.credit_limit is not None:
        worst = max(credit.ask_worst_case(m, ask) for m in models)
    with records.atomic():
        hold = credit.reserve(key.id, worst, terms, ask, now)  # CreditExceeded before anything is written
        values = _record_values(key, generation_id, terms, streamed, hold, answerer, now, trace_id, api)
        record_id = hotsql.record_insert(values)
        _record_opened(key, record_id, values, terms, now)
    return Admission(record_id, generation_id, terms, int(now.timestamp()))


# ``ApiKey.last_used_at`` is written at most once a minute per key and process: the column
# says when a key was last used to within LAST_USED_EVERY seconds, and admission does not
# pay an UPDATE of the key's row for every request.
LAST_USED_EVERY = 60.0
_last_used: dict[int, float] = {}


def _last_used_touch(key_id: int, now: datetime) -> None:
    tick = time.monotonic()
    written = _last_used.get(key_id)
    if written is not None and tick - written < LAST_USED_EVERY:
        return
    hotsql.last_used_set(key_id, now)
    if len(_last_used) >= 100_000:
        _last_used.clear()
    _last_used[key_id] = tick


def _record_values(
    key: KeyInfo,
    generation_id: str,
    terms: ModelTerms,
    streamed: bool,
    hold: credit.Hold,
    answerer: Answerer | None,
    now: datetime,
    trace_id: str = "",
    api: str = DEFAULT_API,
) -> dict[str, Any]:
    prices = terms.prices
    values = {
        "generation_id": generation_id,
        "api_key_id": key.id,
        "api": api,
        "model_id": terms.model_id,
        "model_name": terms.name,
        "status": UsageStatus.IN_PROGRESS,
        "streamed": streamed,
        "input_price": prices.input,
        "output_price": prices.output,
        "cached_input_price": prices.cached_input,
        "reasoning_price": prices.reasoning,
        "request_price": prices.request,
        "created_at": now,
        "instance_id": records.instance_id(),
    }
    if hold is not credit.NO_HOLD:  # else the fields' defaults, written as constants in the SQL
        values.update(reserved_cost=hold.amount, reserved_until=hold.until)
    if answerer is not None:
        values.update(answering_fields(answerer))
    if trace_id:  # else the field's default: the INSERT's column list stays the one of an untraced router
        values["trace_id"] = trace_id
    return values


def answering_fields(answerer: Answerer) -> dict[str, Any]:
    """The record's fields naming the deployment that answers.

    When a request can go to one deployment only (the usual case), admission writes them, and
    settlement leaves them out of its UPDATE when they did not change: three indexed columns
    (deployment, vendor, vendor name) then get one index entry per request instead of two
    (an entry written and moved again), about a quarter of SQLite's work per request."""
    return {
        "deployment_id": answerer.deployment_id,
        "vendor_id": answerer.vendor_id,
        "vendor_name": answerer.vendor_name[:64],
        "upstream_model": answerer.upstream_model[:200],
    }


def _record_opened(key: KeyInfo, record_id: int, values: dict[str, Any], terms: ModelTerms, now: datetime) -> None:
    _last_used_touch(key.id, now)
    if records.storable(terms.prices):
        if len(records.opened) >= 100_000:
            records.opened.clear()
        answering = tuple(values.get(name, records.ANSWERING_DEFAULTS[name]) for name in records.ANSWERING)
        records.opened[record_id] = records.Opened(
            values["generation_id"], key.id, terms.model_id, now, terms.prices, answering
        )
