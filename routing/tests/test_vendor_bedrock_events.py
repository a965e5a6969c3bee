"""Bedrock's event stream on its own: frames decoded at any byte boundary, checksums, exception events, truncation."""

from __future__ import annotations

import pytest

from fakevendors.bedrock import corrupt, event, exception, frame
from routing.errors import UPSTREAM_MESSAGES, UpstreamError
from routing.tests.bedrock_helpers import decode, deltas
from routing.vendors.base import Usage, UsageEvent


def test_decoder_maps_events_to_chunks_whatever_the_byte_boundaries():
    stream = (
        event("messageStart", {"role": "assistant"})
        + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "think"}}})
        + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig"}}})
        + event("contentBlockStop", {"contentBlockIndex": 0})
        + event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Hello"}})
        + event("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t9", "name": "wx"}}})
        + event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"ci'}}})
        + event("contentBlockStart", {"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "t10", "name": "tz"}}})
        + event("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{}"}}})
        + event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": 'ty": "Oslo"}'}}})
        + event("messageStop", {"stopReason": "tool_use"})
        + event("metadata", {"usage": {"inputTokens": 12, "outputTokens": 9, "cacheReadInputTokens": 2}})
    )
    for piece in (1, 5, len(stream)):
        events = decode(stream, piece)
        assert deltas(events) == [
            {"role": "assistant", "reasoning_content": "think"},
            {"content": "Hello"},
            {"tool_calls": [{"index": 0, "id": "t9", "type": "function", "function": {"name": "wx", "arguments": ""}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]},
            {
                "tool_calls": [
                    {"index": 1, "id": "t10", "type": "function", "function": {"name": "tz", "arguments": ""}}
                ]
            },
            {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]},
            {},
        ]
        assert events[-2].choices[0]["finish_reason"] == "tool_calls"
        assert events[-1] == UsageEvent(Usage(prompt_tokens=14, completion_tokens=9, cached_tokens=2))


def test_frame_layout_matches_the_documented_format():
    data = frame({":message-type": "event"}, b"{}")
    assert int.from_bytes(data[0:4], "big") == len(data)
    assert int.from_bytes(data[4:8], "big") == 1 + 13 + 1 + 2 + 5
    assert data[-6:-4] == b"{}"


def test_bad_crc_raises_a_clear_upstream_error():
    data = event("messageStart", {"role": "assistant"}) + corrupt(
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}})
    )
    with pytest.raises(UpstreamError) as caught:
        decode(data)
    assert (caught.value.status, caught.value.code) == (502, "upstream_malformed")
    assert "ChecksumMismatch" in caught.value.detail
    assert caught.value.message == UPSTREAM_MESSAGES["upstream_malformed"]


def test_bad_prelude_crc_raises_before_reading_a_bogus_length():
    data = bytearray(event("messageStart", {"role": "assistant"}))
    data[2] ^= 0x40  # total length now claims megabytes
    with pytest.raises(UpstreamError) as caught:
        decode(bytes(data))
    assert "corrupt event-stream frame" in caught.value.detail


@pytest.mark.parametrize(
    ("exception_type", "status", "code", "retryable"),
    [
        ("throttlingException", 429, "upstream_rate_limited", True),
        ("validationException", 400, "upstream_invalid_request", False),
        ("serviceUnavailableException", 502, "upstream_error", True),
        ("internalServerException", 502, "upstream_error", True),
        ("modelStreamErrorException", 502, "upstream_error", False),
        ("somethingNewException", 502, "upstream_error", False),
    ],
)
def test_exception_events_map_to_statuses(exception_type, status, code, retryable):
    with pytest.raises(UpstreamError) as caught:
        decode(event("messageStart", {"role": "assistant"}) + exception(exception_type, "details here"))
    error = caught.value
    assert (error.status, error.code, error.vendor_code, error.retryable) == (status, code, exception_type, retryable)
    assert "details here" in error.detail and error.message == UPSTREAM_MESSAGES[code]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (event("messageStart", {"role": "assistant"}), "ended before messageStop"),
        (event("messageStop", {"stopReason": "end_turn"})[:-3], "ended inside a frame"),
    ],
)
def test_truncated_streams_are_errors(data, reason):
    with pytest.raises(UpstreamError) as caught:
        decode(data)
    assert reason in caught.value.detail
