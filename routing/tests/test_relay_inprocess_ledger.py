"""Every ledger outcome of a request, in process: what the client got against the usage record.

Also the mid-stream errors and the ``max_tokens`` safety net, whose outcome is a billing rule.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.services import api_key_create
from lib import tokens
from routing.models import Vendor
from routing.tests.inprocess import (
    PROMPT,
    Script,
    answer,
    answer_text,
    cost,
    failure,
    role_batch,
    word_batches,
)
from routing.vendors.base import Usage

ROUTER_PROMPT = tokens.count_messages(PROMPT, "cl100k_base")
LIMIT = 20
CUT = LIMIT * 3 // 2 + 16  # the safety net's threshold for LIMIT: half again, plus 16 tokens


def usage_chunk(exchange) -> dict:
    *_, last, done = exchange.events()
    assert done == "[DONE]" and last["choices"] == []
    return dict(last["usage"])


@pytest.mark.parametrize("stream", [True, False])
def test_completed_with_vendor_usage_bills_the_vendors_figures(relay, stream):
    relay.deploy("m", Script("v", answer(4, usage=Usage(11, 5, cached_tokens=3))))
    seen = relay.chat(stream=stream)
    assert seen.answer() == answer_text(4)
    record = relay.record(seen.generation_id)
    assert (record.status, record.http_status, record.streamed) == ("completed", 200, stream)
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (11, 5, 3)
    assert (record.vendor_prompt_tokens, record.vendor_completion_tokens) == (11, 5)
    assert (record.usage_source, record.finish_reason) == ("vendor", "stop")
    assert record.reserved_cost == 0  # the hold is released
    assert record.cost > 0
    if not stream:
        assert seen.json()["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("stream", [True, False])
def test_completed_without_vendor_usage_is_counted_by_the_router(relay, stream):
    relay.deploy("m", Script("v", answer(6)))
    seen = relay.chat(stream=stream)
    record = relay.record(seen.generation_id)
    assert (record.status, record.usage_source) == ("completed", "router")
    assert (record.prompt_tokens, record.completion_tokens) == (ROUTER_PROMPT, 6)
    assert (record.vendor_prompt_tokens, record.vendor_completion_tokens) == (None, None)
    assert record.cost == cost(ROUTER_PROMPT, 6)


@pytest.mark.parametrize("usage", [Usage(11, 5), None], ids=["vendor", "router"])
def test_include_usage_chunk_shows_the_billed_figures(relay, usage):
    relay.deploy("m", Script("v", answer(5, usage=usage)))
    seen = relay.chat(stream=True, stream_options={"include_usage": True})
    shown = usage_chunk(seen)
    record = relay.record(seen.generation_id)
    assert (shown["prompt_tokens"], shown["completion_tokens"]) == (record.prompt_tokens, record.completion_tokens)
    assert shown["total_tokens"] == record.prompt_tokens + record.completion_tokens
    assert record.completion_tokens == 5


def test_without_include_usage_no_usage_chunk_is_sent(relay):
    relay.deploy("m", Script("v", answer(3, usage=Usage(11, 3))))
    seen = relay.chat(stream=True)
    assert seen.chunks() and all(chunk["choices"] for chunk in seen.chunks())
    assert "usage" not in seen.chunks()[-1]


@pytest.mark.parametrize("stream", [True, False])
def test_error_before_the_stream_costs_nothing(relay, stream):
    relay.deploy("m", Script("v", [role_batch()], error=failure(500)))
    seen = relay.chat(stream=stream)
    assert (seen.status, seen.error()["code"]) == (502, "upstream_error")
    assert "scripted vendor failure" not in seen.raw.decode()  # the vendor's words are the operator's
    record = relay.record(seen.generation_id)
    assert (record.status, record.http_status, record.error_code) == ("error", 502, "upstream_error")
    assert "scripted vendor failure 500" in record.error_message
    assert (record.completion_tokens, record.cost, record.reserved_cost) == (0, Decimal(0), Decimal(0))


def test_mid_stream_error_ends_with_an_error_chunk_and_bills_what_was_delivered(relay):
    relay.deploy("m", Script("v", [role_batch(), *word_batches(3)], error=failure(500)))
    seen = relay.chat(stream=True)
    assert seen.status == 200
    *_, last, done = seen.events()
    assert done == "[DONE]"
    assert last["choices"][0]["finish_reason"] == "error"
    assert last["error"] == {
        "code": "upstream_error",
        "message": "The vendor could not serve this request.",
        "type": "upstream_error",
    }
    assert "scripted vendor failure" not in seen.raw.decode()
    record = relay.record(seen.generation_id)
    assert (record.status, record.http_status, record.completion_tokens) == ("error", 502, 3)
    assert record.cost == cost(ROUTER_PROMPT, 3)


def test_vendor_going_quiet_mid_stream_times_out_and_is_closed(relay):
    script = Script("v", [role_batch(), *word_batches(2)], hang=True)
    relay.deploy("m", script)
    Vendor.objects.filter(name="v").update(idle_timeout=0.1)
    seen = relay.chat(stream=True)
    assert seen.answer() == answer_text(2)
    assert seen.chunks()[-1]["error"]["code"] == "upstream_timeout"
    assert script.closed == 1
    record = relay.record(seen.generation_id)
    assert (record.status, record.error_code, record.completion_tokens) == ("error", "upstream_timeout", 2)


def test_keepalive_comments_are_sent_while_the_vendor_is_silent(relay, settings):
    settings.SIRAYA_KEEPALIVE_SECONDS = 0.03
    relay.deploy("m", Script("v", answer(2), first_delay=0.1))
    seen = relay.chat(stream=True)
    first_data = seen.raw.index(b"data: ")
    assert seen.raw[:first_data].count(b": Siraya Model Router PROCESSING") >= 2
    assert seen.answer() == answer_text(2)


@pytest.mark.parametrize("stream", [True, False])
def test_credit_refusal_is_402_and_recorded_without_cost(relay, stream):
    script = Script("v", answer(2))
    relay.deploy("m", script)
    api_key, plaintext = api_key_create("poor", credit_limit=Decimal("0.000001"))
    seen = relay.chat(key=plaintext, stream=stream)
    assert (seen.status, seen.error()["code"]) == (402, "credit_limit_exceeded")
    assert script.calls == []
    record = relay.record(seen.generation_id)
    assert record.api_key_id == api_key.pk
    assert (record.status, record.http_status, record.error_code) == ("error", 402, "credit_limit_exceeded")
    assert (record.cost, record.reserved_cost) == (Decimal(0), Decimal(0))


def test_rate_limit_refusal_is_429_and_recorded(relay):
    script = Script("v", answer(2))
    relay.deploy("m", script)
    _, plaintext = api_key_create("hasty", requests_per_minute=1)
    assert relay.chat(key=plaintext).status == 200
    seen = relay.chat(key=plaintext)
    assert seen.status == 429
    assert seen.error()["type"] == "rate_limit_error"
    assert len(script.calls) == 1
    record = relay.record(seen.generation_id)
    assert (record.status, record.http_status, record.cost) == ("error", 429, Decimal(0))
    assert record.error_code == seen.error()["code"]


# -- the max_tokens safety net ------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_vendor_ignoring_max_tokens_is_cut_past_the_margin_and_billed_as_delivered(relay, stream):
    # It also reports its own (ignored-limit) figure: the router bills what it delivered.
    script = Script("v", answer(200, usage=Usage(11, 200)))
    relay.deploy("m", script)
    seen = relay.chat(stream=stream, max_tokens=LIMIT)
    assert seen.status == 200
    assert seen.answer() == answer_text(CUT)
    assert seen.finish_reasons()[-1] == "length"
    if stream:
        assert seen.events()[-1] == "[DONE]"
        assert script.yielded < 60 and script.closed == 1  # the vendor was stopped at the cut
    record = relay.record(seen.generation_id)
    assert (record.status, record.finish_reason) == ("completed", "length")
    assert (record.completion_tokens, record.tokens_delivered) == (CUT, CUT)
    # A cut stream never reached the vendor's usage report: its prompt is counted by the router.
    prompt = ROUTER_PROMPT if stream else 11
    assert (record.prompt_tokens, record.cost) == (prompt, cost(prompt, CUT))


@pytest.mark.parametrize("stream", [True, False])
def test_vendor_honouring_max_tokens_is_not_cut(relay, stream):
    """Its tokenizer counts the 30-token answer as 20: within its limit, so it stands whole, billed at its figure."""
    relay.deploy("m", Script("v", answer(30, usage=Usage(11, LIMIT))))
    seen = relay.chat(stream=stream, max_tokens=LIMIT)
    assert seen.answer() == answer_text(30)
    assert seen.finish_reasons()[-1] == "stop"
    record = relay.record(seen.generation_id)
    assert (record.finish_reason, record.usage_source) == ("stop", "vendor")
    assert (record.completion_tokens, record.tokens_delivered) == (LIMIT, 30)


def test_model_ceiling_goes_to_the_vendor_when_the_client_sets_no_limit(relay):
    script = Script("v", answer(2))
    relay.deploy("m", script, max_output_tokens=300)
    relay.chat()
    relay.chat(max_tokens=40)
    assert [(call.completion_limit, call.upstream_model) for call in script.calls] == [(300, "up-v"), (40, "up-v")]
