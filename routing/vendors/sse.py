"""Incremental Server-Sent Events decoder, robust to events split at any byte."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from routing.errors import UpstreamError

T = TypeVar("T")
E = TypeVar("E")

# An SSE event larger than this is treated as a broken upstream, not buffered forever.
MAX_EVENT_BYTES = 16 * 1024 * 1024


@dataclass(slots=True)
class SseEvent:
    data: bytes
    event: str = ""


class SseTooLarge(Exception):
    pass


class SseDecoder:
    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        datas = self._simple(buffer)
        return [SseEvent(data) for data in datas] if datas is not None else self._parse(buffer)

    def feed_data(self, chunk: bytes) -> list[bytes]:
        """``feed`` for a reader of the events' data alone (their ``event:`` names left out)."""
        buffer = self._buffer + chunk if self._buffer else chunk
        datas = self._simple(buffer)
        return datas if datas is not None else [event.data for event in self._parse(buffer)]

    def data_of(self, chunk: bytes | None) -> list[bytes]:
        """``feed_data``, or at the end of the body (None) the data of the events left."""
        return self.feed_data(chunk) if chunk is not None else [event.data for event in self.close()]

    def _simple(self, buffer: bytes) -> list[bytes] | None:
        """The data of ``buffer``'s events if all are simple (``_simple_events``), keeping the rest."""
        if self._data or self._event or (found := _simple_events(buffer)) is None:
            return None
        datas, self._buffer = found
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise SseTooLarge(f"an SSE event exceeded {MAX_EVENT_BYTES} bytes")
        return datas

    def _parse(self, buffer: bytes) -> list[SseEvent]:
        events: list[SseEvent] = []
        start = 0
        # Fast path for what vendors send almost always: events of one ``data: `` line each,
        # ended by a blank line, no CR. Anything else (comments, ``event:`` lines, CRLF, an
        # event split across reads) goes through the line-by-line parser below from there on.
        if not self._data and not self._event:
            while True:
                end = buffer.find(b"\n\n", start)
                if end < 0:
                    break
                if buffer.startswith(b"data: ", start):
                    data = buffer[start + 6 : end]
                    if b"\n" not in data and not data.endswith(b"\r"):
                        events.append(SseEvent(data))
                        start = end + 2
                        continue
                break
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append(SseEvent(b"\n".join(self._data), self._event))
                self._data = []
                self._event = ""
            elif line[0] == 58:  # b":" comment (keepalives such as ": ONEROUTER PROCESSING")
                continue
            else:
                name, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if name == b"data":
                    self._data.append(value)
                elif name == b"event":
                    self._event = value.decode("utf-8", "replace")
        self._buffer = buffer[start:]
        if len(self._buffer) + sum(map(len, self._data)) > MAX_EVENT_BYTES:
            raise SseTooLarge(f"an SSE event exceeded {MAX_EVENT_BYTES} bytes")
        return events

    def close(self) -> list[SseEvent]:
        """Flush an event left unterminated at the end of the stream."""
        tail = self.feed(b"\n\n") if (self._buffer or self._data) else []
        return tail


def _simple_events(buffer: bytes) -> tuple[list[bytes], bytes] | None:
    """The data of ``buffer``'s complete events and what follows them, when every one is a single
    ``data: `` line without CR (what vendors send almost always), found with a few C calls
    over the whole read instead of a loop per event; None otherwise (or when none is complete)."""
    last = buffer.rfind(b"\n\n")
    if last < 0 or not buffer.startswith(b"data: ") or buffer.find(b"\r", 0, last) >= 0:
        return None
    parts = buffer.split(b"\n\n")
    rest = parts.pop()
    # Each part a data line: as many "\n\ndata: " as separators between them, no other newline.
    separators = len(parts) - 1
    if buffer.count(b"\n\ndata: ", 0, last) != separators or buffer.count(b"\n", 0, last) != 2 * separators:
        return None
    return [part[6:] for part in parts], rest


def sse_batches(
    vendor_name: str, reads: AsyncIterator[bytes], decode: Callable[[list[SseEvent], list[T]], bool]
) -> AsyncGenerator[list[T], None]:
    """An SSE body as one batch per network read (see ``VendorAdapter.stream``).

    ``decode`` appends the adapter's events for the SSE events of one read to the batch and
    returns True when the answer is over. What was decoded before a failure in the same read
    is yielded before the failure is raised; an oversized event is the vendor's fault (502).
    """
    decoder = SseDecoder()
    return _batches(
        vendor_name, reads, lambda data: decoder.feed(data) if data is not None else decoder.close(), decode
    )


def sse_data_batches(
    vendor_name: str, reads: AsyncIterator[bytes], decode: Callable[[list[bytes], list[T]], bool]
) -> AsyncGenerator[list[T], None]:
    """``sse_batches`` for an adapter that reads the events' data alone."""
    return _batches(vendor_name, reads, SseDecoder().data_of, decode)


async def _batches(
    vendor_name: str,
    reads: AsyncIterator[bytes],
    events: Callable[[bytes | None], list[E]],
    decode: Callable[[list[E], list[T]], bool],
) -> AsyncGenerator[list[T], None]:
    while True:
        data = await anext(reads, None)
        batch: list[T] = []
        try:
            done = decode(events(data), batch)
        except (UpstreamError, SseTooLarge) as exc:
            if batch:
                yield batch  # what came before the failure in this read still reaches the client
            if isinstance(exc, SseTooLarge):
                raise UpstreamError(502, f"Vendor '{vendor_name}': {exc}.", code="upstream_malformed") from None
            raise
        if batch:
            yield batch
        if done or data is None:
            return
