"""Vendor faults through a live router: a clear error, a correct usage record, nothing leaked."""

from __future__ import annotations

from decimal import Decimal

import httpx
import orjson
import pytest

from conftest import free_port
from fakevendors.openai import PROMPT_TOKENS, words
from lib import tokens
from routing.models import Vendor
from routing.relay.limits import cut_threshold
from routing.tests.leaks import assert_no_leaks, snapshot
from routing.tests.sse_client import content_of


def sse_payloads(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


@pytest.fixture
def before(cast, live_router, fake_openai):
    """A warmed-up router (one good stream), and its fds / tasks / vendor connections."""
    fake_openai.scenario.tokens = 2
    assert cast.chat(stream=True).status_code == 200
    snap = snapshot(live_router.url, live_router.process.pid, fake_openai)
    fake_openai.scenario.tokens = 5
    return snap


def check_no_leaks(live_router, fake_openai, before):
    assert_no_leaks(live_router.url, live_router.process.pid, fake_openai, before)
    # And the router still serves.
    fake_openai.scenario = type(fake_openai.scenario)(tokens=2)


def error_tail(response: httpx.Response) -> dict:
    """Return the error chunk that ends a stream, after checking the stream ends with it and [DONE]."""
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    last = orjson.loads(payloads[-2])
    assert last["choices"][0]["finish_reason"] == "error"
    assert set(last["error"]) == {"code", "message", "type"}
    return last


def streamed_text(response: httpx.Response) -> str:
    return "".join(content_of(orjson.loads(p)) for p in sse_payloads(response.text) if p != "[DONE]")


def test_connection_refused_is_502_before_streaming(cast, live_router, fake_openai, before):
    Vendor.objects.filter(name="fake").update(base_url=f"http://127.0.0.1:{free_port()}/v1")
    response = cast.chat(stream=True)
    assert response.status_code == 502
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"} and error["code"] == "upstream_unreachable"
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.http_status, record.completion_tokens, record.cost) == ("error", 502, 0, Decimal(0))
    Vendor.objects.filter(name="fake").update(base_url=fake_openai.url + "/v1")
    check_no_leaks(live_router, fake_openai, before)


def test_reset_mid_stream_ends_with_error_chunk(cast, live_router, fake_openai, before):
    fake_openai.scenario.reset_after = 3
    response = cast.chat(stream=True)
    assert error_tail(response)["error"]["code"] == "upstream_unreachable"
    assert streamed_text(response) == "".join(words(3))
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.completion_tokens, record.usage_source) == ("error", 3, "router")
    check_no_leaks(live_router, fake_openai, before)


def test_vendor_hanging_before_the_stream_times_out_and_is_closed(cast, live_router, fake_openai, before):
    Vendor.objects.filter(name="fake").update(first_byte_timeout=1.0)
    fake_openai.scenario.hang_after = 0
    response = cast.chat(stream=True)
    # The keepalive (0.3 s here) has started the stream before the 1 s timeout.
    assert error_tail(response)["error"]["code"] == "upstream_timeout"
    assert fake_openai.wait_closed(fake_openai.last()) is not None, "the hanging upstream was not closed"
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.error_code, record.completion_tokens) == ("error", "upstream_timeout", 0)
    check_no_leaks(live_router, fake_openai, before)


def test_vendor_hanging_mid_stream_hits_the_idle_timeout(cast, live_router, fake_openai, before):
    Vendor.objects.filter(name="fake").update(idle_timeout=0.5)
    fake_openai.scenario.hang_after = 3
    response = cast.chat(stream=True)
    error = error_tail(response)["error"]
    assert error["code"] == "upstream_timeout" and "next token" in error["message"]
    assert streamed_text(response) == "".join(words(3))
    assert fake_openai.wait_closed(fake_openai.last()) is not None
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.completion_tokens) == ("error", 3)
    assert record.cost == Decimal(record.prompt_tokens * 1 + 3 * 2) / 1_000_000
    check_no_leaks(live_router, fake_openai, before)


def test_malformed_chunk_ends_with_error_chunk(cast, live_router, fake_openai, before):
    fake_openai.scenario.malformed_after = 2
    response = cast.chat(stream=True)
    assert error_tail(response)["error"]["code"] == "upstream_malformed"
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.completion_tokens) == ("error", 2)
    check_no_leaks(live_router, fake_openai, before)


@pytest.mark.parametrize("split_bytes", [1, 2, 3, 5, 7, 64])
def test_sse_split_into_pieces_of_any_size_is_reassembled(cast, live_router, fake_openai, before, split_bytes):
    fake_openai.scenario.tokens = 12
    fake_openai.scenario.split_bytes = split_bytes
    fake_openai.scenario.split_pause = 0.0005 if split_bytes < 5 else 0.002
    response = cast.chat(stream=True, stream_options={"include_usage": True})
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    assert streamed_text(response) == "".join(words(12))
    assert orjson.loads(payloads[-2])["usage"]["completion_tokens"] == 12
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", PROMPT_TOKENS, 12)
    check_no_leaks(live_router, fake_openai, before)


SWEEP = 60  # split points per stream


@pytest.mark.parametrize("start", range(0, 240, SWEEP))
def test_sse_split_at_every_byte_offset_is_reassembled(cast, live_router, fake_openai, before, start):
    """Write i of the stream is split in two at byte start + i: the four streams cover every offset."""
    chunk_size = len(fake_openai._chunk({"model": "fake-model"}, {"content": " the"}))
    assert chunk_size <= 240  # so the sweep reaches every split point of a content chunk
    fake_openai.scenario.tokens = SWEEP
    fake_openai.scenario.split_sweep = start
    response = cast.chat(stream=True)
    assert sse_payloads(response.text)[-1] == "[DONE]"
    assert streamed_text(response) == "".join(words(SWEEP))
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.completion_tokens) == ("completed", SWEEP)
    check_no_leaks(live_router, fake_openai, before)


@pytest.mark.slow
def test_ten_megabyte_chunk_is_relayed_whole_and_billed(cast, live_router, fake_openai, before):
    big = 10 * 1024 * 1024 // 4  # tokens of " the", 4 bytes each
    fake_openai.scenario.tokens = 3
    fake_openai.scenario.big_chunk_tokens = big
    with httpx.stream(
        "POST",
        cast.url + "/v1/chat/completions",
        json={"model": cast.model, "messages": [{"role": "user", "content": "x"}], "stream": True},
        headers=cast.headers(),
        timeout=60,
    ) as response:
        text = "".join(response.iter_text())
    payloads = sse_payloads(text)
    assert payloads[-1] == "[DONE]"
    content = "".join(content_of(orjson.loads(p)) for p in payloads[:-1])
    assert len(content) == big * 4 + len("".join(words(3)))
    record = cast.record(response.headers["x-generation-id"], timeout=30)
    assert (record.status, record.completion_tokens) == ("completed", big + 3)
    assert record.tokens_delivered == tokens.count_text(content, "cl100k_base")
    check_no_leaks(live_router, fake_openai, before)


def test_vendor_ignoring_max_tokens_is_cut_past_the_tokenizer_margin(cast, live_router, fake_openai, before):
    fake_openai.scenario.tokens = 200
    fake_openai.scenario.token_delay = 0.01
    fake_openai.scenario.honour_max_tokens = False
    response = cast.chat(stream=True, max_tokens=7, stream_options={"include_usage": True})
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    cut = cut_threshold(7)
    assert cut == 26  # 7 * 1.5 + 16: the limit plus the margin for tokenizer differences
    assert streamed_text(response) == "".join(words(cut))
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == cut
    request = fake_openai.last()
    assert fake_openai.wait_closed(request) is not None and not request.finished
    assert request.tokens_written < 200
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.finish_reason, record.completion_tokens) == ("completed", "length", cut)
    assert record.cost == Decimal(record.prompt_tokens * 1 + cut * 2) / 1_000_000
    check_no_leaks(live_router, fake_openai, before)


def test_json_answer_of_a_vendor_ignoring_max_tokens_is_cut_and_billed_as_delivered(
    cast, live_router, fake_openai, before
):
    fake_openai.scenario.tokens = 50
    fake_openai.scenario.honour_max_tokens = False
    response = cast.chat(max_tokens=7)
    assert response.status_code == 200
    body = response.json()
    (choice,) = body["choices"]
    cut = cut_threshold(7)
    assert (choice["message"]["content"], choice["finish_reason"]) == ("".join(words(cut)), "length")
    assert body["usage"]["completion_tokens"] == cut
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.finish_reason, record.completion_tokens) == ("completed", "length", cut)
    assert record.vendor_completion_tokens == 50  # the vendor's own figure, kept for the record
    assert record.cost == Decimal(record.prompt_tokens * 1 + cut * 2) / 1_000_000
    check_no_leaks(live_router, fake_openai, before)


def test_json_answer_within_max_tokens_is_untouched_and_billed_at_the_vendors_figure(
    cast, live_router, fake_openai, before
):
    fake_openai.scenario.tokens = 50  # honoured: the vendor stops at 7 and says so
    response = cast.chat(max_tokens=7)
    (choice,) = response.json()["choices"]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("".join(words(7)), "stop")
    record = cast.record(response.headers["x-generation-id"])
    assert (record.completion_tokens, record.vendor_completion_tokens, record.usage_source) == (7, 7, "vendor")
    check_no_leaks(live_router, fake_openai, before)


def test_max_tokens_cuts_inside_a_multi_token_chunk(cast, live_router, fake_openai, before):
    fake_openai.scenario.tokens = 20
    fake_openai.scenario.words_per_chunk = 4
    fake_openai.scenario.honour_max_tokens = False
    response = cast.chat(stream=True, max_completion_tokens=10)
    cut = cut_threshold(10)  # 31: seven whole chunks and three words of the eighth
    assert streamed_text(response) == "".join(words(4)) * 7 + "".join(words(3))
    record = cast.record(response.headers["x-generation-id"])
    assert (record.finish_reason, record.completion_tokens) == ("length", cut)
    check_no_leaks(live_router, fake_openai, before)


def test_honest_vendor_reaching_max_tokens_is_not_cut_early(cast, live_router, fake_openai, before):
    fake_openai.scenario.tokens = 20
    response = cast.chat(stream=True, max_tokens=6)
    assert streamed_text(response) == "".join(words(6))
    record = cast.record(response.headers["x-generation-id"])
    assert (record.finish_reason, record.completion_tokens, record.usage_source) == ("length", 6, "vendor")
    assert fake_openai.last().finished


def test_connection_of_an_answer_read_to_its_end_waits_idle_in_the_pool(cast, live_router, fake_openai, before):
    """A JSON answer is read to its end, so its connection goes back to the keep-alive pool: the
    leak check counts it as idle (reusable), not as held."""
    assert cast.chat(stream=False).status_code == 200
    after = snapshot(live_router.url, live_router.process.pid, fake_openai)
    assert after.vendor_idle == after.vendor_connections == 1
    check_no_leaks(live_router, fake_openai, before)
