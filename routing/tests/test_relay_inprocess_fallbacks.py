"""Fallbacks, in process: which failure moves the request to the next deployment or model, and which does not;
cooldowns, provider preferences and weights. (``test_fallback`` keeps what needs several processes.)"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from billing.models import ApiKey
from conftest import free_port
from routing.models import Deployment, Vendor
from routing.services import vendor_create
from routing.tests.inprocess import Script, answer, answer_text, attempts, cost, failure, role_batch, word_batches
from routing.vendors.base import Usage

USAGE = Usage(prompt_tokens=11, completion_tokens=3)


@pytest.mark.parametrize("stream", [True, False])
def test_failure_before_the_first_token_falls_back_to_the_next_deployment(relay, stream):
    broken = Script("broken", [role_batch()], error=failure(500))
    good = Script("good", answer(3, usage=USAGE))
    relay.deploy("m", broken, good)
    seen = relay.chat(stream=stream)
    assert seen.status == 200, seen.raw
    assert seen.answer() == answer_text(3)
    if stream:
        roles = [c for c in seen.chunks() if c["choices"] and c["choices"][0]["delta"].get("role")]
        assert len(roles) == 1  # the failed vendor's role chunk was held back, not sent twice
        assert seen.events()[-1] == "[DONE]"
    assert (len(broken.calls), len(good.calls)) == (1, 1)
    assert broken.closed == 1
    record = relay.only_record()  # one request, one record, whatever it took
    assert record.generation_id == seen.generation_id
    assert attempts(record) == [("broken", "error"), ("good", "ok")]
    assert (record.attempts[0]["vendor_status"], record.attempts[0]["status"]) == (500, 502)
    assert (record.vendor_name, record.upstream_model) == ("good", "up-good")
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", 11, 3)
    assert record.cost == cost(11, 3)  # only the answer is billed


def test_failure_after_the_first_token_never_splices_vendors(relay):
    failing = Script("failing", [role_batch(), *word_batches(2)], error=failure(502))
    good = Script("good", answer(5, usage=USAGE))
    relay.deploy("m", failing, good)
    seen = relay.chat(stream=True)
    assert seen.status == 200
    assert seen.answer() == answer_text(2)
    *_, last, done = seen.events()
    assert done == "[DONE]"
    assert last["choices"][0]["finish_reason"] == "error"
    assert last["error"]["code"] == "upstream_error"
    assert good.calls == []
    record = relay.only_record()
    assert (record.status, record.http_status, record.completion_tokens) == ("error", 502, 2)
    assert attempts(record) == [("failing", "error")]
    assert record.cost == cost(record.prompt_tokens, 2)  # billed for the two tokens delivered


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("status", [400, 422])
def test_vendor_refusing_the_request_itself_is_not_retried_elsewhere(relay, stream, status):
    refusing = Script("refusing", [], error=failure(status))
    good = Script("good", answer(2, usage=USAGE))
    relay.deploy("m", refusing, good)
    seen = relay.chat(stream=stream)
    assert (seen.status, seen.error()["code"]) == (400, "upstream_invalid_request")
    assert good.calls == []
    record = relay.only_record()
    assert (record.status, record.http_status, record.cost) == ("error", 400, Decimal(0))
    assert attempts(record) == [("refusing", "error")]


def test_content_filter_is_not_retried_elsewhere(relay):
    filtered = Script("filtered", [], error=failure(400, code="content_filter"))
    good = Script("good", answer(2, usage=USAGE))
    relay.deploy("m", filtered, good)
    seen = relay.chat(stream=True)
    assert (seen.status, seen.error()["code"]) == (400, "content_filter")
    assert good.calls == []


def test_last_deployment_failing_answers_with_its_error(relay):
    relay.deploy("m", Script("one", [], error=failure(503)), Script("two", [], error=failure(429)))
    seen = relay.chat(stream=True)
    assert (seen.status, seen.error()["code"]) == (429, "upstream_rate_limited")
    record = relay.only_record()
    assert attempts(record) == [("one", "error"), ("two", "error")]
    assert (record.status, record.cost) == ("error", Decimal(0))


@pytest.mark.parametrize("stream", [True, False])
def test_request_level_models_fall_back_and_bill_the_model_that_answered(relay, stream):
    relay.deploy("a", Script("dead", [], error=failure(503)), price="1")
    relay.deploy("b", Script("good", answer(4, usage=Usage(9, 4))), price="3")
    seen = relay.chat(model="a", models=["a", "b"], stream=stream)
    assert seen.status == 200, seen.raw
    assert seen.answer() == answer_text(4)
    models = {chunk["model"] for chunk in seen.chunks()} if stream else {seen.json()["model"]}
    assert models == {"b"}
    record = relay.only_record()
    assert attempts(record) == [("dead", "error"), ("good", "ok")]
    assert (record.model_name, record.input_price, record.output_price) == ("b", Decimal(3), Decimal(6))
    assert record.cost == cost(9, 4, price="3")  # re-priced at the model that answered
    unknown = relay.chat(model="a", models=["a", "zzz"])
    assert (unknown.status, unknown.error()["param"]) == (404, "models")


def test_provider_without_fallbacks_tries_only_the_named_vendor(relay):
    relay.deploy("m", Script("one", answer(1, usage=USAGE)), Script("two", [], error=failure(503)), priorities=False)
    strict = relay.chat(provider={"order": ["two"], "allow_fallbacks": False})
    assert strict.status == 502
    assert attempts(relay.record(strict.generation_id)) == [("two", "error")]
    preferred = relay.chat(provider={"order": ["two", "one"]})
    assert preferred.status == 200
    assert attempts(relay.record(preferred.generation_id)) == [("two", "error"), ("one", "ok")]
    bad = relay.chat(provider={"order": "two"})
    assert (bad.status, bad.error()["param"]) == (400, "provider.order")


@pytest.mark.parametrize("stream", [True, False])
def test_unreachable_vendor_falls_back_to_the_next_priority(relay, stream):
    """A real OpenAI-kind vendor on a port where nothing listens, then a scripted one."""
    dead = vendor_create("dead", "openai", f"http://127.0.0.1:{free_port()}/v1", credentials={"api_key": "sk-dead"})
    relay.deploy("m", dead, Script("good", answer(3, usage=Usage(17, 3))))
    seen = relay.chat(stream=stream)
    assert seen.status == 200
    assert seen.answer() == answer_text(3)
    record = relay.record(seen.generation_id)
    assert attempts(record) == [("dead", "error"), ("good", "ok")]
    assert record.attempts[0]["code"] == "upstream_unreachable"
    assert record.vendor_name == "good" and record.upstream_model == "up-good"
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", 17, 3)
    assert record.cost == cost(17, 3)  # only the answer is billed


def test_vendor_silent_before_the_first_token_times_out_and_falls_back(relay):
    silent, good = Script("silent", [role_batch()], hang=True), Script("good", answer(2))
    relay.deploy("m", silent, good)
    Vendor.objects.filter(name="silent").update(first_byte_timeout=0.1)
    seen = relay.chat(stream=True)
    assert seen.answer() == answer_text(2)
    record = relay.record(seen.generation_id)
    assert attempts(record) == [("silent", "error"), ("good", "ok")]
    assert record.attempts[0]["code"] == "upstream_timeout"
    assert silent.closed == 1  # the silent call was closed


def test_429_retry_after_cools_the_deployment_until_it_expires(relay):
    limited = Script("limited", [], error=failure(429, retry_after=0.3))
    relay.deploy("m", limited, Script("good", answer(2)))
    first = relay.chat()
    assert attempts(relay.record(first.generation_id)) == [("limited", "error"), ("good", "ok")]
    second = relay.chat()
    assert attempts(relay.record(second.generation_id)) == [("good", "ok")]
    assert len(limited.calls) == 1  # skipped while cooling down
    limited.error, limited.batches = None, answer(2)
    time.sleep(0.35)
    third = relay.chat()
    assert attempts(relay.record(third.generation_id)) == [("limited", "ok")]


def test_cooldown_after_repeated_failures_expires(relay, settings):
    settings.SIRAYA_COOLDOWN_FAILURES = 2
    settings.SIRAYA_COOLDOWN_WINDOW_SECONDS = 10
    settings.SIRAYA_COOLDOWN_SECONDS = 0.3
    broken = Script("broken", [], error=failure(500))
    relay.deploy("m", broken, Script("good", answer(1)))
    for _ in range(4):
        assert relay.chat().status == 200
    assert len(broken.calls) == 2  # then cooled down
    time.sleep(0.35)
    assert relay.chat().status == 200
    assert len(broken.calls) == 3


def test_provider_order_naming_no_vendor_of_the_model_is_400_and_bills_nothing(relay):
    one, other = Script("one", answer(1)), Script("other", answer(1))
    relay.deploy("m", one)
    relay.deploy("n", other)
    ApiKey.objects.filter(pk=relay.api_key.pk).update(credit_limit=Decimal("1"))  # admission would hold
    for provider, models in (
        ({"order": ["nope"], "allow_fallbacks": False}, None),
        ({"order": ["one"], "allow_fallbacks": False}, ["n"]),
    ):
        body: dict[str, Any] = {"provider": provider}
        if models:
            body.update(model=models[0], models=models)
        seen = relay.chat(**body)
        assert seen.status == 400, seen.raw
        error = seen.error()
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            "provider.order",
            "no_eligible_provider",
        )
        assert "allow_fallbacks" in error["message"]
        record = relay.record(seen.generation_id)
        assert (record.status, record.http_status, record.error_code) == ("error", 400, "no_eligible_provider")
        assert (record.cost, record.reserved_cost, record.prompt_tokens, record.completion_tokens) == (0, 0, 0, 0)
    assert one.calls == [] and other.calls == []
    # The same request naming a vendor that serves the model, or allowing fallbacks, is served.
    assert relay.chat(provider={"order": ["one"], "allow_fallbacks": False}).status == 200
    assert relay.chat(provider={"order": ["nope"]}).status == 200
    assert len(one.calls) == 2


@pytest.mark.slow
def test_weighted_choice_over_requests(relay):
    light, heavy = Script("light", answer(1)), Script("heavy", answer(1))
    relay.deploy("m", light, heavy, priorities=False)
    Deployment.objects.filter(vendor__name="heavy").update(weight=3)
    for _ in range(40):  # ten at a time: a client's pace, not a burst that fills the pools
        assert all(exchange.status == 200 for exchange in relay.together(*[({}, {})] * 10))
    share = len(heavy.calls) / 400
    assert abs(share - 0.75) < 0.06, share
