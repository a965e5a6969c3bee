"""Admission and settlement as the relay drives them through the ledger, synchronously, for
billing's own tests: the model's route resolved first (routing's job), a refusal recorded."""

from __future__ import annotations

from billing.admission import Admission, Rejection, request_admit, request_reject
from billing.credit import Ask
from billing.errors import CreditExceeded
from billing.selectors import KeyInfo
from billing.settlement import Outcome, usage_record_settle
from routing.errors import UnknownModel
from routing.selectors import model_route


def admit(info: KeyInfo, model_name: str, streamed: bool, generation_id: str, ask: Ask | None = None) -> Admission:
    route = model_route(model_name)
    if route is None:
        raise UnknownModel(model_name)
    answerer = route.targets[0].answerer() if len(route.targets) == 1 else None
    try:
        return request_admit(info, generation_id, (route,), streamed, ask, answerer)
    except CreditExceeded as refusal:
        request_reject(info, generation_id, model_name, Rejection(402, refusal.code, refusal.message))
        raise


def settle(record_id: int, outcome: Outcome):
    return usage_record_settle(record_id, outcome).cost
