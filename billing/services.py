"""Writes of the billing domain: keys, admission of a request, settlement of its usage record."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from billing import credit, hotsql, keys
from billing.cost import Prices, TokenCounts, cost_compute
from billing.models import ApiKey, UsageRecord, UsageSource, UsageStatus
from billing.selectors import KeyInfo, api_key_cache_forget
from lib import process, tokens
from lib.ids import generation_id
from routing.errors import RouterError, no_eligible_deployment
from routing.routes import model_route_cached
from routing.selectors import ModelRoute, Target


def generation_id_new() -> str:
    """A new generation id (``lib.ids``: time-ordered, 64 random bits)."""
    return generation_id()


def api_key_create(
    name: str,
    *,
    owner: User | None = None,
    credit_limit: Decimal | None = None,
    limit_reset: str = "never",
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; return it with its plaintext, which is never stored."""
    plaintext = keys.generate()
    api_key = ApiKey.objects.create(
        name=name,
        owner=owner,
        prefix=keys.display_prefix(plaintext),
        key_hash=keys.hash_key(plaintext),
        credit_limit=credit_limit,
        limit_reset=limit_reset,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        expires_at=expires_at,
    )
    return api_key, plaintext


def api_key_revoke(api_key: ApiKey, now: datetime | None = None) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now or timezone.now())
    api_key_cache_forget(api_key.key_hash)


def api_key_enable(api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=None)
    api_key_cache_forget(api_key.key_hash)


@dataclass(frozen=True, slots=True)
class Admission:
    record_id: int
    generation_id: str
    route: ModelRoute
    created: int  # unix seconds, the `created` of every chunk
    # The requested model first, then the request's fallback models (`models`), in order.
    routes: tuple[ModelRoute, ...] = ()


def request_reject(key: KeyInfo, generation_id: str, model_name: str, error: RouterError) -> None:
    """Record an authenticated request refused before admission (invalid body, rate limit)."""
    _record_rejection(key, generation_id, model_name, error, _now())


def _record_rejection(key: KeyInfo, generation_id: str, model_name: str, error: RouterError, now: datetime) -> None:
    with _atomic():
        credit.key_lock(key.id)  # same lock order as admission and settlement: key, then rows
        _rejection_create(key, generation_id, model_name, error, now)
        credit.usage_day_add(key.id, now, 0, 0, Decimal("0"))


def _rejection_create(key: KeyInfo, generation_id: str, model_name: str, error: RouterError, now: datetime) -> None:
    hotsql.record_insert(
        {
            "generation_id": generation_id,
            "api_key_id": key.id,
            "model_name": model_name[:128],
            "status": UsageStatus.ERROR,
            "http_status": error.status,
            "error_code": (error.code or "")[:64],
            "error_message": error.message[:500],
            "created_at": now,
            "finished_at": now,
            "duration_ms": 0,
        }
    )


def _routes(
    model_name: str, fallback_models: Sequence[str], vendors: Collection[str] | None = None
) -> tuple[ModelRoute, ...]:
    routes = []
    for name in dict.fromkeys([model_name, *fallback_models]):
        route = model_route_cached(name)
        param = "model" if name == model_name else "models"
        if route is None:
            raise RouterError(
                404, f"The model '{name}' does not exist or is disabled.", code="model_not_found", param=param
            )
        if route.targets:
            routes.append(route)
    if not routes:
        raise RouterError(
            503, f"The model '{model_name}' has no enabled deployment.", code="no_deployment", param="model"
        )
    if vendors is not None and not any(t.vendor.name in vendors for r in routes for t in r.targets):
        raise no_eligible_deployment(model_name)
    return tuple(routes)


def request_admit(
    key: KeyInfo,
    model_name: str,
    streamed: bool,
    generation_id: str,
    ask: credit.Ask | None = None,
    fallback_models: Sequence[str] = (),
    vendors: Collection[str] | None = None,
) -> Admission:
    """Accept a request for ``model_name``: hold its worst-case cost, open its usage record (``in_progress``).

    A request refused here (402 when the key's credit cannot cover the worst case) still
    leaves one record (status ``error``), so every authenticated request is accounted for.
    The record starts at the first model's prices; settlement re-prices it at the model that
    answered. The hold covers the dearest of the request's models (``models`` fallbacks).
    ``vendors``: the only vendors the request may use (``provider.order`` without fallbacks);
    a request none of them can serve is refused here (400), before anything is held.
    """
    now = _now()
    try:
        routes = _routes(model_name, fallback_models, vendors)
    except RouterError as error:
        _record_rejection(key, generation_id, model_name, error, now)
        raise
    route = routes[0]
    if key.credit_limit is None and hotsql.limit_checked_in_insert():
        # No limit as far as the key cache knows: on SQLite one INSERT that also checks the
        # key has none in the database (else it inserts nothing, and the hold is counted below).
        with _atomic():
            values = _record_values(key, generation_id, routes, streamed, credit.NO_HOLD, now)
            record_id = hotsql.record_insert_unlimited(key.id, values)
            if record_id is not None:
                _record_opened(key, record_id, values, route, now)
                return Admission(record_id, generation_id, route, int(now.timestamp()), routes)
    ask = ask or credit.Ask(messages=[])
    worst = None
    if key.credit_limit is not None:
        worst = max(credit.ask_worst_case(r, ask) for r in routes)
    # A refusal is raised by ``reserve`` before anything is written, and is recorded in the
    # same transaction.
    with _atomic():
        try:
            hold = credit.reserve(key.id, worst, route, ask, now)
        except RouterError as error:
            refusal = error
        else:
            values = _record_values(key, generation_id, routes, streamed, hold, now)
            record_id = hotsql.record_insert(values)
            _record_opened(key, record_id, values, route, now)
            return Admission(record_id, generation_id, route, int(now.timestamp()), routes)
        _record_rejection(key, generation_id, model_name, refusal, now)
    raise refusal


_NESTED = contextlib.nullcontext()


def _now() -> datetime:
    """``timezone.now()`` (USE_TZ is on) without its settings lookup, twice per request."""
    return datetime.now(UTC)


def _atomic() -> contextlib.AbstractContextManager[Any]:
    """One transaction for a write, without a savepoint of its own: none when already in one (in
    the group commit each write has its savepoint, or the batch is redone write by write)."""
    return _NESTED if hotsql.in_transaction() else transaction.atomic(savepoint=False)


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
    key: KeyInfo, generation_id: str, routes: Sequence[ModelRoute], streamed: bool, hold: credit.Hold, now: datetime
) -> dict[str, Any]:
    route = routes[0]
    prices = route.prices
    values = {
        "generation_id": generation_id,
        "api_key_id": key.id,
        "model_id": route.model_id,
        "model_name": route.name,
        "status": UsageStatus.IN_PROGRESS,
        "streamed": streamed,
        "input_price": prices.input,
        "output_price": prices.output,
        "cached_input_price": prices.cached_input,
        "reasoning_price": prices.reasoning,
        "request_price": prices.request,
        "created_at": now,
        "instance_id": _instance_id(),
    }
    if hold is not credit.NO_HOLD:  # else the fields' defaults, written as constants in the SQL
        values.update(reserved_cost=hold.amount, reserved_until=hold.until)
    if len(routes) == 1 and len(route.targets) == 1:
        values.update(_answering_fields(route.targets[0]))
    return values


def _answering_fields(target: Target) -> dict[str, Any]:
    """The record's fields naming the deployment that answers.

    When a request can go to one deployment only (the usual case), admission writes them, and
    settlement leaves them out of its UPDATE when they did not change: three indexed columns
    (deployment, vendor, vendor name) then get one index entry per request instead of two
    (an entry written and moved again), about a quarter of SQLite's work per request."""
    return {
        "deployment_id": target.deployment_id,
        "vendor_id": target.vendor.id,
        "vendor_name": target.vendor.name[:64],
        "upstream_model": target.upstream_model[:200],
    }


def _record_opened(key: KeyInfo, record_id: int, values: dict[str, Any], route: ModelRoute, now: datetime) -> None:
    _last_used_touch(key.id, now)
    if _storable(route.prices):
        if len(_opened) >= 100_000:
            _opened.clear()
        answering = tuple(values.get(name, _ANSWERING_DEFAULTS[name]) for name in _ANSWERING)
        _opened[record_id] = _Opened(values["generation_id"], key.id, route.model_id, now, route.prices, answering)


_instance: str | None = None


def _instance_id() -> str:
    """``process.instance_id()`` without a getpid() system call per request (reset on fork)."""
    global _instance
    if _instance is None:
        _instance = process.instance_id()
    return _instance


def _instance_forget() -> None:
    global _instance
    _instance = None


os.register_at_fork(after_in_child=_instance_forget)


@dataclass(frozen=True, slots=True)
class _Opened:
    """What settlement needs of a record this process just opened, as it was written."""

    generation_id: str
    api_key_id: int
    model_id: int
    created_at: datetime
    prices: Prices
    # The _ANSWERING fields as admission wrote them (their defaults when it did not).
    answering: tuple[Any, ...]


# Records opened by this process and not yet settled: settlement updates them without
# reading them back first. The UPDATE is guarded by the generation id and the in-progress
# status, so a stale entry (a rolled-back admission, a flushed database) never applies; any
# record not found here, or not updated, is read back and settled the ordinary way.
_opened: dict[int, _Opened] = {}
# The fields naming the deployment that answered, and their values until one did.
_ANSWERING_DEFAULTS: dict[str, Any] = {
    "deployment_id": None,
    "vendor_id": None,
    "vendor_name": "",
    "upstream_model": "",
}
_ANSWERING = tuple(_ANSWERING_DEFAULTS)
_PRICE_PLACES = Decimal("0.000001")  # UsageRecord's price fields: 12 digits, 6 places


def _storable(prices: Prices) -> bool:
    """True when the prices read back from a usage record are exactly these (no rounding)."""
    known = _storable_known.get(id(prices))
    if known is not None and known[0] is prices:
        return known[1]
    storable = all(
        p.is_finite() and p == p.quantize(_PRICE_PLACES) and abs(p) < 1_000_000
        for p in (prices.input, prices.output, prices.cached_input, prices.reasoning, prices.request)
    )
    if len(_storable_known) >= 1_000:
        _storable_known.clear()
    _storable_known[id(prices)] = (prices, storable)  # holds prices: the id is not reused meanwhile
    return storable


# Routes are cached, so admissions see the same Prices objects again and again.
_storable_known: dict[int, tuple[Prices, bool]] = {}


@dataclass(slots=True)
class Outcome:
    """How a request ended, as the relay saw it; token figures are settled in ``usage_record_finalize``."""

    status: str
    http_status: int | None = None
    error_code: str = ""
    error_message: str = ""
    finish_reason: str = ""
    # What the vendor reported (None: not reported).
    vendor_prompt_tokens: int | None = None
    vendor_completion_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # Text handed to the client (content, refusal, reasoning, tool-call arguments).
    delivered_text: str = ""
    # Already counted (a checkpoint): used instead of counting ``delivered_text`` / ``messages``.
    delivered_tokens: int | None = None
    prompt_tokens: int | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[Any] | None = None
    encoding: str = "cl100k_base"
    first_token_ms: int | None = None
    duration_ms: int | None = None
    deployment_id: int | None = None
    vendor_id: int | None = None
    vendor_name: str = ""
    upstream_model: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # A JSON answer cut at the client's max_tokens (the vendor ignored it): the completion is
    # billed for the text delivered, not the vendor's figure (still stored, for the record).
    cut_at_limit: bool = False
    # The model that answered when it is not the one admitted (request-level fallback).
    answered_by: ModelRoute | None = None
    # Set by usage_record_finalize: the prompt + completion tokens billed (for the rate limiter).
    billed_tokens: int | None = None
    # Set by ``usage_record_finalize``: the billed figures (for metrics).
    billed_prompt_tokens: int = 0
    billed_completion_tokens: int = 0


def _counts(outcome: Outcome) -> tuple[TokenCounts, str, int]:
    """Return billed token counts and where they came from.

    Prompt: the vendor's figure when it sent one (a zero is a real zero), else counted here.
    Completion: on a completed request the vendor's figure, else the tokens of the text
    actually handed to the client, counted with the model's tokenizer.
    """
    vendor_prompt = outcome.vendor_prompt_tokens
    if vendor_prompt is not None:
        prompt = vendor_prompt
    elif outcome.prompt_tokens is not None:
        prompt = outcome.prompt_tokens
    else:
        prompt = tokens.count_messages(outcome.messages, outcome.encoding, outcome.tools)
    if outcome.delivered_tokens is not None:
        delivered = outcome.delivered_tokens
    else:
        delivered = tokens.count_text(outcome.delivered_text, outcome.encoding)
    billable_vendor_figure = outcome.status == UsageStatus.COMPLETED and not outcome.cut_at_limit
    vendor_completion = outcome.vendor_completion_tokens if billable_vendor_figure else None
    completion = vendor_completion if vendor_completion is not None else delivered
    from_vendor = (vendor_prompt is not None, vendor_completion is not None)
    source = {(True, True): UsageSource.VENDOR, (False, False): UsageSource.ROUTER}.get(from_vendor, UsageSource.MIXED)
    reasoning = outcome.reasoning_tokens if vendor_completion is not None else 0
    counts = TokenCounts(prompt, completion, min(outcome.cached_tokens, prompt), min(reasoning, completion))
    return counts, source, delivered


def _model_fields(route: ModelRoute) -> dict[str, Any]:
    prices = route.prices
    return {
        "model_id": route.model_id,
        "model_name": route.name,
        "input_price": prices.input,
        "output_price": prices.output,
        "cached_input_price": prices.cached_input,
        "reasoning_price": prices.reasoning,
        "request_price": prices.request,
    }


def usage_record_finalize(record_id: int, outcome: Outcome) -> Decimal:
    """Settle an in-progress record: bill it, release its hold, close it. Settling twice changes nothing.

    The cost goes into the key's total for the day the record was created on, in the same
    transaction that zeroes the record's hold (the key's row is locked first, in the same
    order as admission), so spend + held never double-counts or drops a request.
    """
    now = _now()
    counts, source, delivered = _counts(outcome)
    outcome.billed_tokens = counts.prompt + counts.completion
    outcome.billed_prompt_tokens, outcome.billed_completion_tokens = counts.prompt, counts.completion
    failed = outcome.status == UsageStatus.ERROR
    opened = _opened.pop(record_id, None)
    with _atomic():
        # PostgreSQL: lock the key first, the same order as admission (SQLite: nothing to do).
        hotsql.key_of_record_lock(record_id)
        if opened is not None:
            # Opened here: its prices, key and creation time are known; one guarded UPDATE.
            model_id, prices = opened.model_id, opened.prices
            cost, fields = _settlement(outcome, counts, source, delivered, now, model_id, prices, failed)
            if opened.answering == tuple(fields[name] for name in _ANSWERING):
                for name in _ANSWERING:
                    del fields[name]  # as admission wrote them: their index entries stay put
            if hotsql.record_update(record_id, UsageStatus.IN_PROGRESS, fields, opened.generation_id):
                credit.usage_day_add(opened.api_key_id, opened.created_at, counts.prompt, counts.completion, cost)
                return cost
        record = hotsql.record_for_settlement(record_id)
        if record is None:
            raise UsageRecord.DoesNotExist(f"no usage record {record_id}")
        if record["status"] != UsageStatus.IN_PROGRESS:
            cost_before: Decimal = record["cost"]
            return cost_before
        prices = Prices(
            record["input_price"],
            record["output_price"],
            record["cached_input_price"],
            record["reasoning_price"],
            record["request_price"],
        )
        cost, fields = _settlement(outcome, counts, source, delivered, now, record["model_id"], prices, failed)
        hotsql.record_update(record_id, UsageStatus.IN_PROGRESS, fields)
        credit.usage_day_add(record["api_key_id"], record["created_at"], counts.prompt, counts.completion, cost)
    return cost


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a running stream has handed to the client so far (see ``routing.relay.checkpoint``)."""

    tokens_delivered: int
    # The prompt, on the first checkpoint only (None: already stored): its count, or else the
    # messages to count here (``billing.counting.usage_record_checkpoint_counted`` counts first).
    messages: list[dict[str, Any]] | None = None
    tools: list[Any] | None = None
    encoding: str = "cl100k_base"
    prompt_tokens: int | None = None
    vendor_prompt_tokens: int | None = None
    deployment_id: int | None = None
    vendor_id: int | None = None
    vendor_name: str = ""
    upstream_model: str = ""


def usage_record_checkpoint(record_id: int, checkpoint: Checkpoint) -> None:
    """Store a running request's delivered tokens; a settled record is left alone.

    The first checkpoint also stores the locally counted prompt (``prompt_tokens``) and the
    vendor, so a record whose process dies can be billed without the request at hand.
    """
    fields: dict[str, Any] = {"tokens_delivered": checkpoint.tokens_delivered, "checkpoint_at": timezone.now()}
    if checkpoint.messages is not None:
        prompt = checkpoint.prompt_tokens
        if prompt is None:
            prompt = tokens.count_messages(checkpoint.messages, checkpoint.encoding, checkpoint.tools)
        fields["prompt_tokens"] = prompt
        fields.update(
            deployment_id=checkpoint.deployment_id,
            vendor_id=checkpoint.vendor_id,
            vendor_name=checkpoint.vendor_name[:64],
            upstream_model=checkpoint.upstream_model[:200],
        )
    if checkpoint.vendor_prompt_tokens is not None:
        fields["vendor_prompt_tokens"] = checkpoint.vendor_prompt_tokens
    UsageRecord.objects.filter(pk=record_id, status=UsageStatus.IN_PROGRESS).update(**fields)


def _settlement(
    outcome: Outcome,
    counts: TokenCounts,
    source: str,
    delivered: int,
    now: datetime,
    model_id: int | None,
    prices: Prices,
    failed: bool,
) -> tuple[Decimal, dict[str, Any]]:
    """Return a settled record's cost and the fields to write (re-priced at the model that answered)."""
    repriced: dict[str, Any] = {}
    if outcome.answered_by is not None and outcome.answered_by.model_id != model_id:
        prices = outcome.answered_by.prices
        repriced = _model_fields(outcome.answered_by)
    cost = cost_compute(prices, counts, failed=failed)
    return cost, {
        "status": outcome.status,
        "http_status": outcome.http_status,
        "error_code": outcome.error_code[:64],
        "error_message": outcome.error_message[:500],
        "finish_reason": outcome.finish_reason[:32],
        "prompt_tokens": counts.prompt,
        "completion_tokens": counts.completion,
        "cached_tokens": counts.cached,
        "reasoning_tokens": counts.reasoning,
        "usage_source": source,
        "vendor_prompt_tokens": outcome.vendor_prompt_tokens,
        "vendor_completion_tokens": outcome.vendor_completion_tokens,
        "tokens_delivered": delivered,
        "cost": cost,
        "reserved_cost": Decimal("0"),
        "reserved_until": None,
        "first_token_ms": outcome.first_token_ms,
        "duration_ms": outcome.duration_ms,
        "finished_at": now,
        "deployment_id": outcome.deployment_id,
        "vendor_id": outcome.vendor_id,
        "vendor_name": outcome.vendor_name[:64],
        "upstream_model": outcome.upstream_model[:200],
        "attempts": outcome.attempts,
        **repriced,
    }
