"""Cancellation at each stage, a client that stops reading, and shutdown, in process.

Whatever ends the request, the vendor call is closed at once (the adapter's ``finally`` ran)
and the usage record is settled with what the client was sent.
"""

from __future__ import annotations

import pytest

from billing.models import UsageRecord
from lib import tokens
from routing.relay import lifecycle
from routing.tests.inprocess import (
    PROMPT,
    Script,
    after_messages,
    answer,
    answer_text,
    at,
    attempts,
    cost,
    failure,
    role_batch,
    word_batches,
)
from routing.vendors.base import Usage

# Seconds from the client's leaving to the vendor call being closed: the same turn of the loop, in practice.
CLOSE_BOUND = 0.05
ROUTER_PROMPT = tokens.count_messages(PROMPT, "cl100k_base")


def vendor_called(script: Script):
    return lambda exchange: len(script.calls) == 1


def assert_closed_at_once(script: Script, exchange) -> None:
    assert script.closed == 1, "the vendor call was not closed"
    assert script.closed_at is not None and exchange.disconnected_at is not None
    assert script.closed_at - exchange.disconnected_at < CLOSE_BOUND


def test_client_leaving_while_the_body_is_read_costs_nothing_and_calls_no_vendor(relay):
    script = Script("v", answer(3))
    relay.deploy("m", script)
    seen = relay.chat(stream=True, exchange={"body_parts": 2, "disconnect_in_body": True})
    assert (seen.status, seen.raw) == (0, b"")  # nothing was sent
    assert script.calls == []
    assert not UsageRecord.objects.exists()  # the caller left before anything was admitted


@pytest.mark.parametrize("stream", [True, False])
def test_client_leaving_before_the_first_byte_closes_the_vendor_and_bills_the_prompt_only(relay, stream):
    script = Script("slow", [role_batch()], hang=True)
    relay.deploy("m", script)
    seen = relay.chat(stream=stream, exchange={"disconnect_when": vendor_called(script)})
    assert seen.status == 0  # no byte of the answer had been sent
    assert_closed_at_once(script, seen)
    record = relay.only_record()
    assert (record.status, record.error_code, record.http_status) == ("cancelled", "client_disconnected", 499)
    assert (record.streamed, record.completion_tokens, record.tokens_delivered) == (stream, 0, 0)
    assert (record.prompt_tokens, record.usage_source) == (ROUTER_PROMPT, "router")
    assert record.cost == cost(ROUTER_PROMPT, 0)
    assert attempts(record) == [("slow", "cancelled")]


def test_client_leaving_at_a_time_before_the_first_token(relay):
    script = Script("late", answer(3), first_delay=5.0)
    relay.deploy("m", script)
    seen = relay.chat(stream=True, exchange={"disconnect_when": at(0.05)})
    assert_closed_at_once(script, seen)
    assert (script.yielded, relay.only_record().status) == (0, "cancelled")


def test_client_leaving_mid_stream_closes_the_vendor_and_bills_what_was_delivered(relay):
    script = Script("talker", answer(50, usage=Usage(11, 50)), delay=0.01)
    relay.deploy("m", script)
    seen = relay.chat(stream=True, exchange={"disconnect_after": 7})
    assert seen.status == 200
    assert seen.answer() == answer_text(7)  # the held role chunk went out with the first word
    assert_closed_at_once(script, seen)
    assert script.yielded < 12  # the vendor was stopped, not read to the end
    record = relay.record(seen.generation_id)
    assert (record.status, record.error_code, record.http_status) == ("cancelled", "client_disconnected", 499)
    # No usage had come from the vendor: the prompt is counted by the router, the completion is what was sent.
    assert (record.completion_tokens, record.tokens_delivered) == (7, 7)
    assert (record.prompt_tokens, record.usage_source) == (ROUTER_PROMPT, "router")
    assert record.cost == cost(ROUTER_PROMPT, 7)
    assert attempts(record) == [("talker", "cancelled")]


def test_client_leaving_during_a_fallback_attempt_cancels_it(relay):
    broken = Script("broken", [], error=failure(500))
    slow = Script("slow", [], hang=True)
    relay.deploy("m", broken, slow)
    seen = relay.chat(stream=True, exchange={"disconnect_when": vendor_called(slow)})
    assert_closed_at_once(slow, seen)
    record = relay.only_record()
    assert record.status == "cancelled"
    assert attempts(record) == [("broken", "error"), ("slow", "cancelled")]


def test_client_that_stops_reading_is_cut_after_the_stall_timeout(relay, settings):
    settings.SIRAYA_CLIENT_STALL_SECONDS = 0.2
    script = Script("talker", answer(200), delay=0.005)
    relay.deploy("m", script)
    seen = relay.chat(stream=True, exchange={"stop_reading_after": 3})
    assert seen.blocked and seen.messages == 3
    assert script.closed == 1
    assert script.yielded < 10  # blocked sends held the relay, and the relay held the vendor
    record = relay.only_record()
    assert (record.status, record.error_code, record.http_status) == ("cancelled", "client_stalled", 499)
    # Billed for the three writes the client took, not the one it never read.
    assert record.completion_tokens == 3 == tokens.count_text(seen.answer(), "cl100k_base")
    assert record.duration_ms is not None and record.duration_ms >= 200


def test_shutdown_ends_running_streams_with_an_error_chunk_and_settles_them(relay):
    script = Script("long", [role_batch(), *word_batches(4)], hang=True)
    relay.deploy("m", script)
    seen = relay.chat(
        stream=True,
        exchange={"during": lambda: lifecycle.drain(0.05), "during_when": after_messages(4)},
    )
    assert seen.status == 200
    assert seen.answer() == answer_text(4)
    *_, last, done = seen.events()
    assert done == "[DONE]"
    assert last["choices"][0]["finish_reason"] == "error"
    assert last["error"]["code"] == "server_shutdown"
    assert script.closed == 1
    record = relay.only_record()
    assert (record.status, record.error_code, record.http_status) == ("cancelled", "server_shutdown", 503)
    assert record.completion_tokens == 4


def test_shutdown_lets_a_stream_finish_within_the_grace_period(relay):
    short = Script("short", answer(5, usage=Usage(11, 5)), delay=0.02)
    long = Script("long", [role_batch(), *word_batches(2)], hang=True)
    relay.deploy("m", short)
    relay.deploy("n", long)
    drain = {"during": lambda: lifecycle.drain(0.5), "during_when": after_messages(2)}
    finished, stopped = relay.together(({"stream": True}, {}), ({"model": "n", "stream": True}, drain))
    assert finished.answer() == answer_text(5) and finished.finish_reasons() == ["stop"]
    assert stopped.chunks()[-1]["error"]["code"] == "server_shutdown"
    assert relay.record(finished.generation_id).status == "completed"
    assert relay.record(stopped.generation_id).error_code == "server_shutdown"
