"""Text runs through the relay, in process: a vendor's chunks as ``TextRun`` events reach the
client as exactly the bytes the same chunks one by one do, are billed the same, and are cut at
``max_tokens`` at the same place, in every client API."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from fakevendors.openai import words
from lib import tokens
from routing.tests.inprocess import PROMPT, Script, role_batch
from routing.vendors.base import ChunkEvent, StreamEvent, TextRun, TextShape, Usage, UsageEvent

SHAPE = TextShape(
    {"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": None}, {"content": ""}, None
)
LIMIT = 20  # the cut threshold is 46 tokens: inside the answer's second run
WORDS = words(60)  # one token each


def run(texts: list[str]) -> TextRun:
    return TextRun(SHAPE, texts, [text.encode() for text in texts])


def answer(runs: bool) -> list[list[StreamEvent]]:
    """A role chunk, a run before any text (taken chunk by chunk), a first chunk, two runs, the end."""
    parts = [WORDS[:3], WORDS[3:4], WORDS[4:30], WORDS[30:]]
    batches: list[list[StreamEvent]] = [role_batch()]
    for texts in parts:
        batch: list[StreamEvent] = [run(texts)] if runs else [*run(texts).chunks()]
        batches.append(batch)
    batches.append([ChunkEvent([{"index": 0, "delta": {}, "finish_reason": "stop"}]), UsageEvent(Usage(9, 60))])
    return batches


REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": PROMPT, "stream_options": {"include_usage": True}}),
    "messages": ("/v1/messages", {"messages": PROMPT}),
    "responses": ("/v1/responses", {"input": "hi"}),
}
LIMIT_FIELD = {"chat": "max_tokens", "messages": "max_tokens", "responses": "max_output_tokens"}


def normalised(body: bytes, generation_id: str) -> bytes:
    """The body with what differs between two requests (ids, times) made the same."""
    body = body.replace(generation_id.encode(), b"GEN").replace(generation_id.removeprefix("gen-").encode(), b"ID")
    return re.sub(rb'"(created|created_at)":\d+', rb'"\1":0', body)


def both_ways(relay, script: Script, batches: Any, path: str, body: dict[str, Any]) -> list[tuple[bytes, tuple]]:
    """The client's bytes (ids and times made the same) and the record's billing, for the answer
    sent as runs and then as the same chunks one by one."""
    seen = []
    for runs in (True, False):
        script.batches = batches(runs)
        (exchange,) = relay.together((orjson.dumps(body), {"path": path}))
        record = relay.record(exchange.generation_id)
        billed = (record.status, record.finish_reason, record.completion_tokens, record.tokens_delivered)
        seen.append((normalised(exchange.raw, exchange.generation_id), billed))
    return seen


@pytest.mark.parametrize("limit", [None, LIMIT, 100], ids=["no limit", "cut in a run", "within the limit"])
@pytest.mark.parametrize("api", sorted(REQUESTS))
def test_runs_reach_the_client_as_their_chunks_do(relay, api, limit):
    script = Script("v", answer(runs=True))
    relay.deploy("m", script)
    path, body = REQUESTS[api]
    body = {"model": "m", "stream": True, **body}
    if limit is not None or api == "messages":
        body[LIMIT_FIELD[api]] = limit or 1000
    seen = both_ways(relay, script, answer, path, body)
    assert seen[0] == seen[1]
    (_, (status, finish, completion, delivered)) = seen[0]
    assert status == "completed"
    if limit == LIMIT:
        assert (finish, completion, delivered) == ("length", LIMIT * 3 // 2 + 16, LIMIT * 3 // 2 + 16)
    else:
        assert (completion, delivered) == (60, 60)


def emoji_answer(runs: bool) -> list[list[StreamEvent]]:
    """Texts of as many tokens as bytes (a hieroglyph after a space: 2 characters, 5 bytes, 5
    tokens): a run passed under the cut threshold by its size must be measured in bytes."""
    texts = [" \U00013000"] * 60
    parts = [texts[:3], texts[3:4], texts[4:12], texts[12:20], texts[20:]]
    batches: list[list[StreamEvent]] = [role_batch()]
    for part in parts:
        batches.append([run(part)] if runs else [*run(part).chunks()])
    batches.append([ChunkEvent([{"index": 0, "delta": {}, "finish_reason": "stop"}]), UsageEvent(Usage(9, 300))])
    return batches


@pytest.mark.parametrize("limit", [30, 1000], ids=["cut after runs passed by their size", "within the limit"])
@pytest.mark.parametrize("api", sorted(REQUESTS))
def test_runs_passed_by_their_size_are_cut_where_their_chunks_are(relay, api, limit):
    script = Script("v", emoji_answer(runs=True))
    relay.deploy("m", script)
    path, body = REQUESTS[api]
    body = {"model": "m", "stream": True, LIMIT_FIELD[api]: limit, **body}
    seen = both_ways(relay, script, emoji_answer, path, body)
    assert seen[0] == seen[1]
    (_, (status, finish, completion, delivered)) = seen[0]
    assert status == "completed" and completion == delivered
    assert finish == ("length" if limit == 30 else "stop")


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_no_text_counts_more_tokens_than_its_bytes(encoding):
    """What lets a run pass the cut threshold uncounted: in every encoding the router counts with
    (byte-level BPE), a token stands for at least one byte of text."""
    samples = [
        "".join(chr(c) for c in range(start, start + 400) if not 0xD800 <= c < 0xE000)
        for start in (0, 0x370, 0x600, 0x900, 0x3040, 0x4E00, 0xAC00, 0xE000, 0x1F300, 0x13000, 0x1D400)
    ]
    samples += [" \U00013000" * 50, "\U0001f642\u200d" * 40, "\x00\x01\x7f" * 30, "a" * 3000, " " * 500]
    for text in samples:
        assert tokens.count_text(text, encoding) <= len(text.encode())
