"""Runs of text chunks on an OpenAI-shaped stream, read without a JSON parse per chunk.

Most chunks of most streams differ from the one before only in their text (``{"id":...,
"choices":[{"index":0,"delta":{"content":"<text>"},...}],...}``, the same id, model and
fingerprint each time). Once one such chunk was parsed the full way, its bytes around the
text are kept (``ChunkBytes``); a later event whose data is those bytes around a text that
needs no JSON escape is that chunk with this text, and consecutive ones become one
``TextRun``. Everything else, and any run that fails a check, is parsed the full way.

Why a match means the same chunk: the kept bytes are proven, when learned, to put a probe
text exactly into the delta's ``content`` (the bytes with the probe parse, through the
adapter's own ``chunk_events``, to the learned chunk with the probe as its text). A text
without ``"``, ``\\`` or control characters is one JSON string token whatever it holds, so
every other token of the chunk is the learned one. The adapters' ``chunk_events`` pass a
delta's text through untouched: a chunk of the shape yields the shape's event with its text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from routing.vendors.base import TEXT_PROBE, ChunkEvent, StreamEvent, TextRun, TextShape

# What a JSON string's content may not hold unescaped, besides the quote (counted apart).
_ESCAPED = re.compile(rb"[\x00-\x1f\\]")
_PROBE = TEXT_PROBE.encode()
_PLAIN_DELTA = frozenset(("role", "content"))
# Chunks parsed the full way, since the last run, from which a shape is learned (again): a stream
# whose every chunk differs otherwise (an ``obfuscation`` field) stops trying after these.
MAX_LEARNS = 8

ChunkEvents = Callable[[dict[str, Any]], list[StreamEvent]]
# The full way for one event's data: append its events to the batch; True at ``[DONE]``.
Decode = Callable[[bytes, list[StreamEvent]], bool]


class ChunkBytes:
    """A learned text shape on the wire: the event data before and after the text."""

    __slots__ = ("head", "shape", "size", "tail")

    def __init__(self, head: bytes, tail: bytes, shape: TextShape) -> None:
        self.head = head
        self.tail = tail
        self.size = len(head) + len(tail)
        self.shape = shape


def learned(data: bytes, events: list[StreamEvent], chunk_events: ChunkEvents) -> ChunkBytes | None:
    """The shape of the chunk ``data`` was parsed into (``events``), if it is a text chunk."""
    if len(events) != 1 or type(event := events[0]) is not ChunkEvent or event.native is not None:
        return None
    if len(event.choices) != 1 or type(choice := event.choices[0]) is not dict or choice.get("finish_reason"):
        return None
    delta = choice.get("delta")
    if type(delta) is not dict or not delta.keys() <= _PLAIN_DELTA or type(text := delta.get("content")) is not str:
        return None
    raw = text.encode()
    # An empty text is the opening chunk's (with the role), which no other chunk's shape follows.
    if not raw or b'"' in raw or _ESCAPED.search(raw) or _PROBE in data:
        return None
    at = data.find(b'"content":"' + raw + b'"')
    if at < 0:
        return None
    head, tail = data[: at + 11], data[at + 11 + len(raw) :]
    shape = TextShape(choice, delta, event.extra)
    try:
        probed = chunk_events(orjson.loads(head + _PROBE + tail))
    except Exception:  # whatever the probe raises (the adapter's own errors too), nothing is learned
        return None
    if len(probed) != 1 or type(probe := probed[0]) is not ChunkEvent or probe.native is not None:
        return None
    if probe.choices != shape.choices(TEXT_PROBE) or probe.extra != event.extra:
        return None
    return ChunkBytes(head, tail, shape)


class TextRuns:
    """One stream's fast path: the learned shape; a read's texts of it are gathered into runs.

    Per open stream it holds only the shape and two references (``decode`` is the adapter's
    reader as it is, a bound method: no closure per stream)."""

    __slots__ = ("chunk_events", "full", "learns", "wire")

    def __init__(self, chunk_events: ChunkEvents, full: Decode) -> None:
        self.chunk_events = chunk_events
        self.full = full  # the full way for one event's data
        self.wire: ChunkBytes | None = None
        self.learns = 0

    def decode(self, datas: list[bytes], batch: list[StreamEvent]) -> bool:
        """Append the events of these events' data to ``batch`` (the full way for those not of
        the shape); True at ``[DONE]``."""
        full = self.full
        wire = self.wire
        pending: list[bytes] = []  # the texts' bytes, as the events carried them
        head, tail, size = (wire.head, wire.tail, wire.size) if wire is not None else (b"", b"", -1)
        start, end = len(head), len(tail)
        for data in datas:
            if size >= 0 and len(data) >= size and data.startswith(head) and data.endswith(tail):
                pending.append(data[start : len(data) - end])
                continue
            if pending:
                self.flush(pending, batch)
                pending = []
            before = len(batch)
            if full(data, batch):
                return True
            if self.learns < MAX_LEARNS and len(batch) - before == 1:
                self.learns += 1
                found = learned(data, batch[before:], self.chunk_events)
                if found is not None:
                    wire = self.wire = found
                    head, tail, size = wire.head, wire.tail, wire.size
                    start, end = len(head), len(tail)
        if pending:
            self.flush(pending, batch)
        return False

    def flush(self, raws: list[bytes], batch: list[StreamEvent]) -> None:
        """The gathered texts as one run, or each the full way if any needs an escape or is not UTF-8."""
        wire = self.wire
        assert wire is not None
        joined = b'"'.join(raws)
        if joined.count(b'"') == len(raws) - 1 and _ESCAPED.search(joined) is None:
            try:
                texts = joined.decode().split('"')
            except UnicodeDecodeError:
                pass
            else:
                batch.append(TextRun(wire.shape, texts, raws))
                self.learns = 0  # the shape pays: learn again whenever it changes
                return
        for raw in raws:
            self.full(wire.head + raw + wire.tail, batch)
