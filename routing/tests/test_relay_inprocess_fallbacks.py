"""Fallbacks, in process: which failure moves the request to the next deployment or model, and which does not."""

from __future__ import annotations

from decimal import Decimal

import pytest

from routing.tests.inprocess import Script, answer, answer_text, attempts, cost, failure, role_batch, word_batches
from routing.vendors.base import Usage

USAGE = Usage(prompt_tokens=11, completion_tokens=3)


@pytest.mark.parametrize("stream", [True, False])
def test_failure_before_the_first_token_falls_back_to_the_next_deployment(relay, stream):
    broken = Script("broken", [role_batch()], error=failure(503))
    good = Script("good", answer(3, usage=USAGE))
    relay.deploy("m", broken, good)
    seen = relay.chat(stream=stream)
    assert seen.status == 200, seen.raw
    assert seen.text() == answer_text(3)
    if stream:
        roles = [c for c in seen.chunks() if c["choices"] and c["choices"][0]["delta"].get("role")]
        assert len(roles) == 1  # the failed vendor's role chunk was held back, not sent twice
        assert seen.events()[-1] == "[DONE]"
    assert (len(broken.calls), len(good.calls)) == (1, 1)
    assert broken.closed == 1
    record = relay.only_record()  # one request, one record, whatever it took
    assert record.generation_id == seen.generation_id
    assert attempts(record) == [("broken", "error"), ("good", "ok")]
    assert (record.attempts[0]["vendor_status"], record.attempts[0]["status"]) == (503, 502)
    assert (record.vendor_name, record.upstream_model) == ("good", "up-good")
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", 11, 3)
    assert record.cost == cost(11, 3)  # only the answer is billed


def test_failure_after_the_first_token_never_splices_vendors(relay):
    failing = Script("failing", [role_batch(), *word_batches(2)], error=failure(502))
    good = Script("good", answer(5, usage=USAGE))
    relay.deploy("m", failing, good)
    seen = relay.chat(stream=True)
    assert seen.status == 200
    assert seen.text() == answer_text(2)
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
    assert seen.text() == answer_text(4)
    models = {chunk["model"] for chunk in seen.chunks()} if stream else {seen.json()["model"]}
    assert models == {"b"}
    record = relay.only_record()
    assert attempts(record) == [("dead", "error"), ("good", "ok")]
    assert (record.model_name, record.input_price, record.output_price) == ("b", Decimal(3), Decimal(6))
    assert record.cost == cost(9, 4, price="3")  # re-priced at the model that answered


def test_provider_without_fallbacks_tries_only_the_named_vendor(relay):
    relay.deploy("m", Script("one", answer(1, usage=USAGE)), Script("two", [], error=failure(503)), priorities=False)
    strict = relay.chat(provider={"order": ["two"], "allow_fallbacks": False})
    assert strict.status == 502
    assert attempts(relay.record(strict.generation_id)) == [("two", "error")]
    preferred = relay.chat(provider={"order": ["two", "one"]})
    assert preferred.status == 200
    assert attempts(relay.record(preferred.generation_id)) == [("two", "error"), ("one", "ok")]
