"""The usage record's client API: written at admission and by a refusal, and kept through an outage's journal."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing import journal
from billing.admission import Rejection, request_admit
from billing.cost import Prices
from billing.models import UsageApi, UsageRecord
from billing.selectors import api_key_load, authorization_hash
from billing.services import api_key_create
from billing.terms import ModelTerms

pytestmark = pytest.mark.django_db


def _key():
    _, plaintext = api_key_create("api-tester")
    return api_key_load(authorization_hash(f"Bearer {plaintext}"))


def test_admission_writes_the_api_it_is_given_and_chat_completions_by_default() -> None:
    info = _key()
    assert info is not None
    free = Prices(*[Decimal(0)] * 5)
    terms = ModelTerms(model_id=None, name="m", encoding="cl100k_base", max_output_tokens=100, prices=free)  # type: ignore[arg-type]
    request_admit(info, "gen-default", (terms,), streamed=False)
    request_admit(info, "gen-messages", (terms,), streamed=True, api=UsageApi.MESSAGES.value)
    apis = dict(UsageRecord.objects.values_list("generation_id", "api"))
    assert apis == {"gen-default": "chat_completions", "gen-messages": "messages"}


def test_a_refusal_kept_through_an_outage_replays_with_its_api() -> None:
    info = _key()
    assert info is not None
    kept = journal.reject_write(
        info.id, "gen-kept", "m", Rejection(503, "database_unavailable", "down"), "", "responses"
    )
    journal.apply(journal.parse_line(journal._line(kept, 1)))
    # A journal written before records named their API replays as chat completions (all there was then).
    older = journal.reject_write(info.id, "gen-older", "m", Rejection(429, "rate_limited", "slow down"))
    older.data.pop("api")
    journal.apply(older)
    apis = dict(UsageRecord.objects.values_list("generation_id", "api"))
    assert apis == {"gen-kept": "responses", "gen-older": "chat_completions"}
