"""``POST /v1/messages`` in process, answered with Claude's own events (``ChunkEvent.native``).

The script's batches are what the Claude adapters yield for a request sent in Claude's format
(``claude_messages.StreamState(native=True)`` over Claude's stream events): the relay counts and
bills their canonical choices while the Messages renderer relays Claude's blocks as they came,
and the router's safety-net cut still ends a vendor that ignored ``max_tokens``.
"""

from __future__ import annotations

from typing import Any

from fakevendors import claude as native
from fakevendors.openai import words
from routing.relay.limits import cut_threshold
from routing.tests.inprocess import Script, answer, answer_text, failure
from routing.tests.test_messages_inprocess import events, send
from routing.vendors.base import StreamEvent
from routing.vendors.claude_messages import StreamState

REDACTED = {"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "EmwK"}}


def claude_batches(claude_events: list[dict[str, Any]]) -> list[list[StreamEvent]]:
    """One batch per Claude event, as the adapter reads them."""
    state = StreamState("claude", native=True)
    return [batch for batch in (state.events(event) for event in claude_events) if batch]


def claude_answer(text_words: int, *, thoughts: int = 0, redacted: bool = False) -> list[dict[str, Any]]:
    usage = native.usage(20, cache_read=7, cache_write=3, output_tokens=1)
    out = [native.message_start("claude-x", usage)]
    out += native.thinking_events(0, thoughts, native.Signatures()) if thoughts else []
    index = 1 if thoughts else 0
    if redacted:
        out += [REDACTED, {"type": "content_block_stop", "index": 1}]
        index = 2
    out.append({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
    out += [native.text_delta(index, word) for word in words(text_words)]
    out.append({"type": "content_block_stop", "index": index})
    return out + native.message_end("stop_sequence", text_words + thoughts)


def test_claude_blocks_pass_as_they_came_and_the_ends_are_the_routers(relay):
    sent = claude_answer(4, thoughts=2, redacted=True)
    relay.deploy("m", Script("v", claude_batches(sent)))
    seen = send(relay, {"stream": True})
    received = events(seen)
    blocks = [(name, data) for name, data in received if name.startswith("content_block")]
    assert blocks == [(e["type"], e) for e in sent if e["type"].startswith("content_block")]
    start = received[0][1]["message"]
    assert (start["id"], start["model"]) == (seen.generation_id, "m")
    assert start["usage"] == {**native.usage(20, 7, 3, 1)}
    delta = received[-2][1]
    assert (delta["delta"]["stop_reason"], received[-1][0]) == ("stop_sequence", "message_stop")
    assert delta["usage"] == {
        "input_tokens": 20, "output_tokens": 6, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 7,
    }  # fmt: skip
    record = relay.record(seen.generation_id)
    assert (record.status, record.prompt_tokens, record.cached_tokens, record.completion_tokens) == (
        "completed", 30, 7, 6,
    )  # fmt: skip


def test_claude_ignoring_max_tokens_is_cut_and_its_block_closed_once(relay):
    relay.deploy("m", Script("v", claude_batches(claude_answer(60, thoughts=1))))
    seen = send(relay, {"stream": True, "max_tokens": 10})
    received = events(seen)
    names = [name for name, _ in received]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    # The thinking block (index 0) and the cut text block (index 1) each start and stop once.
    starts = [data["index"] for name, data in received if name == "content_block_start"]
    stops = [data["index"] for name, data in received if name == "content_block_stop"]
    assert starts == stops == [0, 1]
    text = "".join(d["delta"].get("text", "") for n, d in received if n == "content_block_delta" and d["index"] == 1)
    cut = cut_threshold(10)
    assert len(text.split()) + 1 == cut  # the thinking word counts against the limit too
    assert received[-2][1]["delta"]["stop_reason"] == "max_tokens"
    record = relay.record(seen.generation_id)
    assert (record.completion_tokens, record.finish_reason) == (cut, "length")


def test_claude_failing_before_its_first_block_falls_back_to_a_translated_answer(relay):
    opening = claude_answer(0)[:2]  # message_start and an empty text block's start, then a failure
    relay.deploy("m", Script("claude", claude_batches(opening), error=failure(529)), Script("other", answer(3)))
    seen = send(relay, {"stream": True})
    received = events(seen)
    names = [name for name, _ in received]
    assert names.count("message_start") == 1 and names.count("content_block_start") == 1
    assert received[0][1]["message"]["usage"] == {"input_tokens": 0, "output_tokens": 0}  # the router's own
    text = "".join(d["delta"]["text"] for n, d in received if n == "content_block_delta")
    assert text == answer_text(3)
    record = relay.record(seen.generation_id)
    assert [attempt["outcome"] for attempt in record.attempts] == ["error", "ok"]


def test_keepalive_pings_come_before_claudes_events(relay, settings):
    settings.SIRAYA_KEEPALIVE_SECONDS = 0.05
    relay.deploy("m", Script("v", claude_batches(claude_answer(2)), first_delay=0.3))
    received = events(send(relay, {"stream": True}))
    assert received[0] == ("ping", {"type": "ping"})
    assert [name for name, _ in received if name != "ping"][:3] == [
        "message_start", "content_block_start", "content_block_delta",
    ]  # fmt: skip
