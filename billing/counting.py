"""Token counting for admission, checkpoints and settlement, before their writes are queued.

The group-commit writer (``billing.writer``) is one thread that every request's admission and
settlement wait for, and asgiref's one shared worker thread (``database_sync_to_async``) serves
key lookups and checkpoints. Counting a long prompt in either delayed every other request. So
the counting happens here, first: short texts on the spot, long ones in a pool of
``SIRAYA_TOKEN_COUNT_WORKERS`` threads of their own (``lib.tokens.CountingPool``), and the
writes then carry the figures (``Ask.prompt_tokens``, ``Outcome.prompt_tokens`` and
``delivered_tokens``, ``Checkpoint.prompt_tokens``).
"""

from __future__ import annotations

from dataclasses import replace

from channels.db import database_sync_to_async
from django.conf import settings

from billing.credit import Ask, completion_ceiling
from billing.selectors import KeyInfo
from billing.settlement import Checkpoint, Outcome, usage_record_checkpoint
from billing.terms import ModelTerms
from lib import tokens

_pool: tokens.CountingPool | None = None


def counting_pool() -> tokens.CountingPool:
    global _pool
    if _pool is None or _pool.workers != max(1, settings.SIRAYA_TOKEN_COUNT_WORKERS):
        _pool = tokens.CountingPool(settings.SIRAYA_TOKEN_COUNT_WORKERS)
    return _pool


def limits_count(key: KeyInfo) -> bool:
    """True when the key's limits need the prompt counted before admission (credit or tokens per minute)."""
    return key.credit_limit is not None or bool(key.tokens_per_minute)


async def ask_counted(key: KeyInfo, terms: ModelTerms, ask: Ask) -> Ask:
    """Return ``ask`` with its prompt counted (and its completion ceiling on ``terms``, the
    requested model) when the key's limits need them.

    Counting runs here, in the counting pool for a long prompt, so that neither the rate
    limiter nor admission (in the group-commit writer) counts it."""
    if not limits_count(key) or (ask.prompt_tokens is not None and ask.completion_ceiling is not None):
        return ask
    prompt = ask.prompt_tokens
    if prompt is None:
        prompt = await counting_pool().messages(ask.messages, terms.encoding, ask.tools)
    return replace(ask, prompt_tokens=prompt, completion_ceiling=completion_ceiling(terms, ask))


def outcome_counted_here(outcome: Outcome) -> Outcome | None:
    """Return ``outcome`` with what settlement would count counted on the spot, when it is
    short; None if a long text is left for ``outcome_counted`` (``settlement._counts`` says
    what settlement counts)."""
    pool = counting_pool()
    prompt, delivered = outcome.prompt_tokens, outcome.delivered_tokens
    if outcome.vendor_prompt_tokens is None and prompt is None:
        if tokens.prompt_chars(outcome.messages, outcome.tools) >= pool.inline_chars:
            return None
        prompt = tokens.count_messages(outcome.messages, outcome.encoding, outcome.tools)
    if delivered is None:
        if len(outcome.delivered_text) >= pool.inline_chars:
            return None
        delivered = tokens.count_text(outcome.delivered_text, outcome.encoding)
    return replace(outcome, prompt_tokens=prompt, delivered_tokens=delivered)


async def outcome_counted(outcome: Outcome) -> Outcome:
    """Return ``outcome`` with what settlement would count counted (the prompt if the vendor sent
    no figure, the delivered text), in the counting pool when long, so the settlement write only writes."""
    counted = outcome_counted_here(outcome)
    if counted is not None:
        return counted
    pool = counting_pool()
    prompt, delivered = outcome.prompt_tokens, outcome.delivered_tokens
    if outcome.vendor_prompt_tokens is None and prompt is None:
        prompt = await pool.messages(outcome.messages, outcome.encoding, outcome.tools)
    if delivered is None:
        delivered = await pool.text(outcome.delivered_text, outcome.encoding)
    return replace(outcome, prompt_tokens=prompt, delivered_tokens=delivered)


_checkpoint_write = database_sync_to_async(usage_record_checkpoint)


async def usage_record_checkpoint_counted(record_id: int, checkpoint: Checkpoint) -> None:
    """``usage_record_checkpoint`` with the first checkpoint's prompt counted first, off the shared thread."""
    if checkpoint.messages is not None and checkpoint.prompt_tokens is None:
        counted = await counting_pool().messages(checkpoint.messages, checkpoint.encoding, checkpoint.tools)
        checkpoint = replace(checkpoint, prompt_tokens=counted)
    await _checkpoint_write(record_id, checkpoint)
