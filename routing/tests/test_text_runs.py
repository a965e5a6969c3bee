"""The stream's fast path (``routing.vendors.textruns``) against the full parse of every chunk.

A vendor's stream is decoded both ways by each OpenAI-shaped adapter: the fast way must stand
for exactly the events of the full way, and every client dialect must write exactly the same
bytes from them, whatever the chunks hold: escapes, unicode, tool calls, several choices,
usage, annotations, a shape that changes, bytes that are not JSON or not UTF-8.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from routing.dialects.chat.dialect import ChatStream
from routing.dialects.messages.stream import MessagesStream
from routing.dialects.responses.stream import ResponsesStream
from routing.errors import UpstreamError
from routing.vendors import adapter_class
from routing.vendors.base import ChunkEvent, StreamEvent, TextRun, VendorConfig
from routing.vendors.openai import OpenAIAdapter
from routing.vendors.sse import SseDecoder
from routing.vendors.textruns import MAX_LEARNS, TextRuns

KINDS = ("openai", "azure", "byteplus", "onerouter")
WORDS = [" the", " naïve", " 中文", " 🎉", " cat", "", " a/b", " <tag>", " \u2028", " x"]


def adapter(kind: str) -> OpenAIAdapter:
    vendor = VendorConfig(1, "v", kind, "https://vendor.example/v1", {}, {"api_key": "k"}, 5.0, 5.0, 5.0)
    found = adapter_class(kind)(vendor)
    assert isinstance(found, OpenAIAdapter)
    return found


def chunk(content: Any = None, finish: str | None = None, **top: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    payload: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1765000000}
    payload |= {"model": "m-1", "system_fingerprint": "fp_1", "choices": [choice], "usage": None}
    return payload | top


def sse(*payloads: dict[str, Any] | bytes) -> bytes:
    out = [p if isinstance(p, bytes) else orjson.dumps(p) for p in payloads]
    return b"".join(b"data: " + data + b"\n\n" for data in out)


def texts(words: list[str], **top: Any) -> list[dict[str, Any]]:
    return [chunk(word, **top) for word in words]


def opening() -> dict[str, Any]:
    first = chunk("")
    first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
    return first


USAGE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1765000000, "model": "m-1",
         "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}}  # fmt: skip
TOOL = chunk()
TOOL["choices"][0]["delta"] = {"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                               "function": {"name": "f", "arguments": '{"a": "\\"q\\""}'}}]}  # fmt: skip
TWO = chunk("left")
TWO["choices"].append({"index": 1, "delta": {"content": "right"}, "logprobs": None, "finish_reason": None})
REASONING = chunk()
REASONING["choices"][0]["delta"] = {"reasoning_content": "think"}
AZURE = chunk("hi")
AZURE["choices"][0]["content_filter_results"] = {"hate": {"filtered": False, "severity": "safe"}}
ROLE_EVERY = chunk("hey")
ROLE_EVERY["choices"][0]["delta"] = {"role": "assistant", "content": "hey"}


def raw_chunk(delta: bytes) -> bytes:
    """A text chunk as ``chunk`` writes it, its delta as given."""
    head = b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1765000000,"model":"m-1",'
    head += b'"system_fingerprint":"fp_1","choices":[{"index":0,"delta":'
    return head + delta + b',"logprobs":null,"finish_reason":null}],"usage":null}'


def spaced(payload: dict[str, Any]) -> bytes:
    """A chunk with spaces between its tokens (valid JSON that no fast path may take as its own)."""
    return orjson.dumps(payload, option=orjson.OPT_INDENT_2).replace(b"\n", b" ")


def word_run(n: int = 12, **top: Any) -> list[dict[str, Any]]:
    return texts([WORDS[i % len(WORDS)] for i in range(n)], **top)


STREAMS: dict[str, bytes] = {
    "plain": sse(opening(), *word_run(40), chunk(finish="stop"), USAGE) + b"data: [DONE]\n\n",
    "escapes": sse(*word_run(3), *texts(['say "hi"', "back\\slash", "line\nbreak", "tab\t", "\x7f"]), *word_run(3)),
    "unicode escapes": sse(*word_run(3), raw_chunk(rb'{"content":"caf\u00e9 \ud83c\udf89 \/"}'), *word_run(3)),
    "tool calls": sse(*word_run(3), TOOL, TOOL, *word_run(3), chunk(finish="tool_calls")),
    "two choices": sse(*word_run(3), TWO, *word_run(3), TWO),
    "reasoning": sse(REASONING, *word_run(3), REASONING, *word_run(3)),
    "usage on every chunk": sse(*[c | {"usage": USAGE["usage"]} for c in word_run(8)]),
    "created ticks": sse(*word_run(5), *word_run(5, created=1765000001), *word_run(5, created=1765000002)),
    "obfuscation": sse(*[c | {"obfuscation": "x" * i} for i, c in enumerate(word_run(3 * MAX_LEARNS))]),
    "service tier": sse(*word_run(6, service_tier="default"), *word_run(6, service_tier="flex")),
    "no fingerprint": sse(*word_run(6, system_fingerprint=None)),
    "keys reordered": sse(*[{"choices": c.pop("choices")} | c for c in word_run(8)]),
    "whitespace": sse(*word_run(3), *[spaced(c) for c in word_run(4)], *word_run(3)),
    "role on every chunk": sse(*[ROLE_EVERY] * 6),
    "annotations": sse(*[AZURE] * 4, *word_run(3)),
    "duplicate key": sse(*word_run(3), raw_chunk(b'{"content":" the","content":" dup"}'), *word_run(3)),
    # The text's bytes first found elsewhere: only the probe shows they are not the delta's.
    "decoy": sse(*[{"note": {"content": word}} | chunk(" hi") for word in [" hi", " yo", " ho", " hey"]]),
    "probe text": sse(*word_run(3), *texts(["\ue000siraya-text\ue001"] * 3), *word_run(3)),
    "error chunk": sse(*word_run(4), chunk("x", error={"message": "overloaded", "code": "server_error"})),
    "not utf-8": sse(*word_run(4)) + sse(*word_run(1)).replace(b" the", b" \xff\xfe") + sse(*word_run(3)),
    "raw control character": sse(*word_run(4)) + sse(*word_run(1)).replace(b" the", b" \x01") + sse(*word_run(2)),
    "not json": sse(*word_run(4), b'{"id":"chatcmpl-1","choices":[{"delta":{"content":"a"}}', *word_run(2)),
    "content null": sse(*word_run(3), *[chunk(None)] * 2, *word_run(3)),
    "finish with text": sse(*word_run(3), chunk(" end", finish="stop")),
}


def decode(kind: str, wire: bytes, fast: bool, cuts: list[int]) -> tuple[list[StreamEvent], str | None]:
    """The events of ``wire`` read in pieces cut at ``cuts``, and the code of the error that ended it."""
    found = adapter(kind)
    runs = TextRuns(found.chunk_events, found._decode_one)
    decoder = SseDecoder()
    events: list[StreamEvent] = []
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    try:
        for piece in [*pieces, None]:
            sse_events = decoder.feed(piece) if piece is not None else decoder.close()
            datas = [event.data for event in sse_events]
            if fast:
                done = runs.decode(datas, events)
            else:
                done = any(found._decode_one(data, events) for data in datas)
            if done:
                break
    except UpstreamError as error:
        return events, error.code
    return events, None


def expanded(events: list[StreamEvent]) -> list[StreamEvent]:
    return [one for event in events for one in (event.chunks() if isinstance(event, TextRun) else [event])]


RENDERERS: dict[str, Callable[[], Any]] = {
    "chat": lambda: ChatStream("gen-1", 1765000000, "router/m"),
    "messages": lambda: MessagesStream("gen-1", "router/m"),
    "responses": lambda: ResponsesStream("gen-1", 1765000000, "router/m", {}),
}


def rendered(make: Callable[[], Any], events: list[StreamEvent], fast: bool) -> bytes:
    renderer = make()
    out = []
    for event in events:
        if isinstance(event, TextRun):
            data = renderer.text_run(event) if fast else None
            out += [data] if data is not None else [renderer.chunk(c.choices, c.extra) for c in event.chunks()]
        elif isinstance(event, ChunkEvent):
            out.append(renderer.chunk(event.choices, event.extra, event.native))
    return b"".join(out) + renderer.finish(None)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_the_fast_path_stands_for_the_full_parse_and_renders_the_same_bytes(kind, name):
    wire = STREAMS[name]
    rng = random.Random(name + kind)
    for cuts in ([], sorted(rng.sample(range(1, len(wire)), 3)), list(range(97, len(wire), 97))):
        slow, slow_error = decode(kind, wire, False, cuts)
        fast, fast_error = decode(kind, wire, True, cuts)
        assert fast_error == slow_error
        assert expanded(fast) == slow
        for dialect, make in RENDERERS.items():
            assert rendered(make, fast, fast=True) == rendered(make, slow, fast=False), dialect


def test_a_plain_stream_is_one_run_between_its_first_chunks_and_its_end():
    events, error = decode("openai", STREAMS["plain"], True, [])
    kinds = [type(e).__name__ for e in events]
    assert error is None
    assert kinds == ["ChunkEvent", "ChunkEvent", "TextRun", "ChunkEvent", "UsageEvent"]
    run = events[2]
    assert isinstance(run, TextRun) and len(run.texts) == 39
    assert "".join(run.texts) == "".join(WORDS[i % len(WORDS)] for i in range(1, 40))


def test_escaped_and_unparsable_chunks_never_join_a_run():
    for name in ("escapes", "unicode escapes", "not utf-8", "raw control character", "duplicate key", "whitespace"):
        events, _ = decode("openai", STREAMS[name], True, [])
        for run in (e for e in events if isinstance(e, TextRun)):
            assert set(run.texts) <= {*WORDS, "\x7f"}, name  # DEL needs no escape


def test_a_stream_whose_chunks_all_differ_stops_learning():
    runs = TextRuns(adapter("openai").chunk_events, adapter("openai")._decode_one)
    events: list[StreamEvent] = []
    datas = [e.data for e in SseDecoder().feed(STREAMS["obfuscation"])]
    runs.decode(datas, events)
    assert runs.learns == MAX_LEARNS
    assert not any(isinstance(e, TextRun) for e in events)
