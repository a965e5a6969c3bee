"""Claude on Bedrock in its own format (``InvokeModel``): which requests take it, the body sent, and
``InvokeModelWithResponseStream``'s frames (Claude's events, base64 in ``chunk`` frames) decoded."""

from __future__ import annotations

import base64

import orjson
import pytest

from fakevendors import claude as native
from fakevendors.eventstream import chunk, event, exception, frame
from routing.dialects.messages.request import parse_messages_request
from routing.errors import UpstreamError
from routing.tests.bedrock_helpers import MODEL_ID, chat, config
from routing.vendors.base import ChunkEvent, UpstreamCall, UsageEvent
from routing.vendors.bedrock import BedrockAdapter
from routing.vendors.bedrock.invoke import InvokeStreamDecoder, invoke_body, uses_invoke

CLAUDE_BODY = {
    "model": "m",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}],
    "top_k": 4,
    "metadata": {"user_id": "u"},
    "stream": True,
}


def messages_call(upstream: str = MODEL_ID) -> UpstreamCall:
    return UpstreamCall(parse_messages_request(orjson.dumps(CLAUDE_BODY)), upstream, "gen-1")


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        (MODEL_ID, True),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", True),
        ("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0", True),
        ("amazon.nova-pro-v1:0", False),
        ("meta.llama3-70b-instruct-v1:0", False),
    ],
)
def test_messages_requests_to_claude_models_take_invoke_model(upstream, expected):
    assert uses_invoke(messages_call(upstream)) is expected
    assert not uses_invoke(UpstreamCall(chat(), upstream, "gen-1"))  # chat requests: Converse


def test_the_claude_body_is_sent_as_it_came_with_bedrocks_version():
    body = invoke_body(messages_call())
    assert body == {
        "max_tokens": 50, "messages": CLAUDE_BODY["messages"], "top_k": 4, "metadata": {"user_id": "u"},
        "anthropic_version": "bedrock-2023-05-31",
    }  # fmt: skip
    adapter = BedrockAdapter(config())
    request = adapter.request(messages_call(), stream=True)
    assert request.url.path.endswith("/invoke-with-response-stream")
    assert orjson.loads(request.content) == body
    assert adapter.request(messages_call(), stream=False).url.path.endswith("/invoke")


def claude_stream() -> bytes:
    events = [native.message_start("claude", native.usage(9, 2, 1, 1))]
    events += [{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}]
    events += [native.text_delta(0, "Hello"), {"type": "content_block_stop", "index": 0}]
    events += native.message_end("end_turn", 3)
    return b"".join(chunk(e) for e in events)


def decode(data: bytes, piece: int) -> list[object]:
    decoder = InvokeStreamDecoder("aws")
    found: list[object] = []
    for i in range(0, len(data), piece):
        found.extend(decoder.feed(data[i : i + piece]))
    decoder.finish()
    return found


def test_the_stream_carries_claudes_own_events_beside_canonical_chunks_whatever_the_byte_boundaries():
    stream = claude_stream()
    for piece in (1, 7, len(stream)):
        events = decode(stream, piece)
        chunks = [e for e in events if isinstance(e, ChunkEvent)]
        assert [c.native["type"] for c in chunks if c.native] == [
            "message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
        ]  # fmt: skip
        assert [c.choices[0]["delta"].get("content") for c in chunks] == [None, None, "Hello", None, None]
        usage = [e.usage for e in events if isinstance(e, UsageEvent)]
        assert (usage[0].prompt_tokens, usage[0].cached_tokens, usage[0].cache_write_tokens) == (12, 2, 1)
        assert usage[-1].completion_tokens == 3


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        (claude_stream()[:-40], "upstream_malformed", 502),  # ended inside a frame
        (chunk(native.message_start("claude", native.usage(9, 0, 0, 1))), "upstream_malformed", 502),  # no message_stop
        (frame({":event-type": "chunk", ":message-type": "event"}, b'{"bytes": "%%%"}'), "upstream_malformed", 502),
        (exception("throttlingException", "Too many requests"), "upstream_rate_limited", 429),
        (
            chunk({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            "upstream_error",
            502,
        ),
    ],
)
def test_broken_or_failed_streams_raise(data, code, status):
    with pytest.raises(UpstreamError) as failed:
        decode(data, len(data))
    assert (failed.value.code, failed.value.status) == (code, status)


def test_other_frames_are_skipped():
    padding = event("messageStart", {"role": "assistant"})  # a Converse event has no place here
    raw = base64.b64encode(orjson.dumps({"type": "ping"})).decode()
    ping = frame({":event-type": "chunk", ":message-type": "event"}, orjson.dumps({"bytes": raw}))
    assert decode(padding + ping + claude_stream(), 3)[0] == decode(claude_stream(), 3)[0]
