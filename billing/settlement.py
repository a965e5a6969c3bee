"""Settlement of a request's usage record: bill what was delivered, release the hold, close
it; and checkpoints of a running stream. Synchronous; run in the group-commit writer or a
worker thread (``billing.ledger``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from billing import credit, hotsql, records
from billing.cost import Prices, TokenCounts, cost_compute
from billing.models import UsageRecord, UsageSource, UsageStatus
from billing.terms import ModelTerms
from lib import tokens


@dataclass(slots=True)
class Outcome:
    """How a request ended, as the relay saw it; ``usage_record_settle`` bills it."""

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
    answered_by: ModelTerms | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a settled request was billed."""

    cost: Decimal  # USD
    prompt_tokens: int
    completion_tokens: int
    tokens_delivered: int = 0  # completion tokens handed to the client (counted by the router)

    @property
    def billed_tokens(self) -> int:
        """Prompt + completion tokens billed (what the rate limiter's token window keeps)."""
        return self.prompt_tokens + self.completion_tokens


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


def _model_fields(route: ModelTerms) -> dict[str, Any]:
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


def usage_record_settle(record_id: int, outcome: Outcome) -> Settlement:
    """Settle an in-progress record: bill it, release its hold, close it. Settling twice changes nothing.

    The cost goes into the key's total for the day the record was created on, in the same
    transaction that zeroes the record's hold (the key's row is locked first, in the same
    order as admission), so spend + held never double-counts or drops a request.
    """
    now = records.now()
    counts, source, delivered = _counts(outcome)
    failed = outcome.status == UsageStatus.ERROR
    opened = records.opened.pop(record_id, None)
    with records.atomic():
        # PostgreSQL: lock the key first, the same order as admission (SQLite: nothing to do).
        hotsql.key_of_record_lock(record_id)
        if opened is not None:
            # Opened here: its prices, key and creation time are known; one guarded UPDATE.
            model_id, prices = opened.model_id, opened.prices
            cost, fields = _settlement(outcome, counts, source, delivered, now, model_id, prices, failed)
            if opened.answering == tuple(fields[name] for name in records.ANSWERING):
                for name in records.ANSWERING:
                    del fields[name]  # as admission wrote them: their index entries stay put
            if not fields["error_code"]:
                del fields["error_code"]  # empty, as admission wrote it: its index entry stays put
            if hotsql.record_update(record_id, UsageStatus.IN_PROGRESS, fields, opened.generation_id):
                credit.usage_day_add(opened.api_key_id, opened.created_at, counts.prompt, counts.completion, cost)
                return Settlement(cost, counts.prompt, counts.completion, delivered)
        record = hotsql.record_for_settlement(record_id)
        if record is None:
            raise UsageRecord.DoesNotExist(f"no usage record {record_id}")
        if record["status"] != UsageStatus.IN_PROGRESS:
            return Settlement(record["cost"], counts.prompt, counts.completion, delivered)
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
    return Settlement(cost, counts.prompt, counts.completion, delivered)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a running stream has handed to the client so far (see ``routing.relay.meter``)."""

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


def settlement_estimate(outcome: Outcome, opened: records.Opened | ModelTerms | None) -> Settlement:
    """Return what settling ``outcome`` will bill, without the database: for a settlement kept
    through an outage (``billing.pending``), whose caller needs the figures now (the rate
    limiter's tokens, the metrics). The cost needs the record's prices, known when this process
    opened it (``opened``, or the terms it was admitted at against the journal); otherwise it is reported as zero here and billed in full when the
    write lands."""
    counts, _, _ = _counts(outcome)
    if opened is None:
        return Settlement(Decimal("0"), counts.prompt, counts.completion)
    prices = opened.prices
    if outcome.answered_by is not None and outcome.answered_by.model_id != opened.model_id:
        prices = outcome.answered_by.prices
    cost = cost_compute(prices, counts, failed=outcome.status == UsageStatus.ERROR)
    return Settlement(cost, counts.prompt, counts.completion)
