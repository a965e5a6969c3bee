"""The Messages stream's fast path for text deltas writes the very bytes of its general path."""

from __future__ import annotations

import pytest

from routing.dialects.messages.stream import MessagesStream, event


def text_chunk(text: str, **delta: object) -> list[dict[str, object]]:
    return [{"index": 0, "delta": {"content": text, **delta}, "finish_reason": None}]


@pytest.mark.parametrize("text", ["plain", 'quotes " and \\ backslash', "naïve ☃ \u2028 emoji 🎉", "\n\t</script>"])
def test_text_delta_bytes_equal_the_general_event(text):
    stream = MessagesStream("gen-x", "m")
    stream.chunk(text_chunk("first", role="assistant"), None)  # message_start, the text block opened
    expected = event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    )
    assert stream.chunk(text_chunk(text), None) == expected


def test_the_fast_path_follows_the_open_blocks_index():
    stream = MessagesStream("gen-x", "m")
    stream.chunk([{"index": 0, "delta": {"reasoning_content": "hmm"}, "finish_reason": None}], None)  # block 0
    stream.chunk(text_chunk("a"), None)  # closes the thinking block, opens text block 1
    assert stream.chunk(text_chunk("b"), None) == event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "b"}},
    )
    # A finish reason is not the fast path's: it is kept for message_delta.
    assert stream.chunk([{"index": 0, "delta": {"content": "c"}, "finish_reason": "length"}], None)
    assert stream.stop == "max_tokens"
