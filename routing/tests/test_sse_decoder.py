"""The SSE decoder against a plain reading of the SSE format, over any split of the bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from routing.vendors.sse import SseDecoder, SseEvent

_value = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))
_line = st.one_of(
    _value.map(lambda v: b"data: " + v),
    _value.map(lambda v: b"data:" + v),
    _value.map(lambda v: b": " + v),  # a comment (keepalive)
    st.sampled_from([b"event: delta", b"event: message_stop", b"id: 7", b"retry: 10"]),
)
_event = st.lists(_line, min_size=1, max_size=4)


def reference(events: list[list[bytes]]) -> list[SseEvent]:
    """What a reader of the spec gets: one event per block that has data lines."""
    out = []
    for lines in events:
        data = []
        name = ""
        for line in lines:
            field, _, value = line.partition(b":")
            if not field:
                continue
            value = value[1:] if value.startswith(b" ") else value
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value.decode()
        if data:
            out.append(SseEvent(b"\n".join(data), name))
    return out


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(_event, max_size=8),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_any_split_decodes_as_the_whole(events, crlf, cuts):
    newline = b"\r\n" if crlf else b"\n"
    wire = b"".join(newline.join(lines) + newline + newline for lines in events)
    decoder = SseDecoder()
    got: list[SseEvent] = []
    start = 0
    for cut in sorted({min(c, len(wire)) for c in cuts}):
        got += decoder.feed(wire[start:cut])
        start = cut
    got += decoder.feed(wire[start:])
    got += decoder.close()
    assert got == reference(events)


def test_one_line_events_in_one_read():
    wire = b'data: {"a":1}\n\ndata: {"b":2}\n\n: keepalive\n\ndata: [DONE]\n\n'
    assert [e.data for e in SseDecoder().feed(wire)] == [b'{"a":1}', b'{"b":2}', b"[DONE]"]
