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
from billing.services import Checkpoint, Outcome, usage_record_checkpoint
from lib import tokens
from routing.routes import model_route_cached, model_route_peek

_pool: tokens.CountingPool | None = None


def counting_pool() -> tokens.CountingPool:
    global _pool
    if _pool is None or _pool.workers != max(1, settings.SIRAYA_TOKEN_COUNT_WORKERS):
        _pool = tokens.CountingPool(settings.SIRAYA_TOKEN_COUNT_WORKERS)
    return _pool


_model_route_async = database_sync_to_async(model_route_cached)


def limits_count(key: KeyInfo) -> bool:
    """True when the key's limits need the prompt counted before admission (credit or tokens per minute)."""
    return key.credit_limit is not None or bool(key.tokens_per_minute)


async def ask_counted(key: KeyInfo, model_name: str, ask: Ask) -> Ask:
    """Return ``ask`` with its prompt counted (and its completion ceiling) when the key's limits need them.

    Counting runs here, in the counting pool for a long prompt, so that neither the rate
    limiter nor admission (in the group-commit writer) counts it."""
    if not limits_count(key) or (ask.prompt_tokens is not None and ask.completion_ceiling is not None):
        return ask
    hit, route = model_route_peek(model_name)  # a cached route costs no hop to the worker thread
    if not hit:
        route = await _model_route_async(model_name)
    if route is None:
        return ask  # an unknown model is refused at admission
    prompt = ask.prompt_tokens
    if prompt is None:
        prompt = await counting_pool().messages(ask.messages, route.encoding, ask.tools)
    return replace(ask, prompt_tokens=prompt, completion_ceiling=completion_ceiling(route, ask))


def outcome_counted_here(outcome: Outcome) -> bool:
    """Count on the spot what settlement would count, when it is short; return False if a long
    text is left for ``outcome_counted`` (see ``services._counts`` for what settlement counts)."""
    pool = counting_pool()
    if outcome.vendor_prompt_tokens is None and outcome.prompt_tokens is None:
        if tokens.prompt_chars(outcome.messages, outcome.tools) >= pool.inline_chars:
            return False
        outcome.prompt_tokens = tokens.count_messages(outcome.messages, outcome.encoding, outcome.tools)
    if outcome.delivered_tokens is None:
        if len(outcome.delivered_text) >= pool.inline_chars:
            return False
        outcome.delivered_tokens = tokens.count_text(outcome.delivered_text, outcome.encoding)
    return True


async def outcome_counted(outcome: Outcome) -> None:
    """Count what settlement would count (the prompt if the vendor sent no figure, the delivered
    text), in the counting pool when it is long, so that the settlement write only writes."""
    pool = counting_pool()
    if outcome.vendor_prompt_tokens is None and outcome.prompt_tokens is None:
        outcome.prompt_tokens = await pool.messages(outcome.messages, outcome.encoding, outcome.tools)
    if outcome.delivered_tokens is None:
        outcome.delivered_tokens = await pool.text(outcome.delivered_text, outcome.encoding)


_checkpoint_write = database_sync_to_async(usage_record_checkpoint)


async def usage_record_checkpoint_counted(record_id: int, checkpoint: Checkpoint) -> None:
    """``usage_record_checkpoint`` with the first checkpoint's prompt counted first, off the shared thread."""
    if checkpoint.messages is not None and checkpoint.prompt_tokens is None:
        counted = await counting_pool().messages(checkpoint.messages, checkpoint.encoding, checkpoint.tools)
        checkpoint = replace(checkpoint, prompt_tokens=counted)
    await _checkpoint_write(record_id, checkpoint)
