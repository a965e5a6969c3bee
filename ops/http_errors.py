"""OpenAI-shaped answers to requests refused by the HTTP parser itself, under daphne (twisted)
and under the production command (uvicorn with httptools), and the edge's body limits applied
while twisted reads a body (see the second half).

Twisted refuses malformed requests before any application sees them: a header line or all
headers over 16 KiB, more than 500 headers, control bytes in a header, a bad request line. Its answer is a
bare ``400 Bad Request`` with no body; this gives it the router's error body, so every
client error carries ``{"error": {...}}``. The connection is still closed afterwards, as
twisted does (the rest of such a request cannot be trusted). ``HeadLimitedHttpToolsProtocol``
gives uvicorn's httptools protocol the same limits and the same answer (see the last part).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from routing.errors import RouterError
from routing.relay import edge

# The request line and headers together, and their count: twisted's limits, kept under uvicorn.
HEAD_LIMIT_BYTES = 16 * 1024
HEADER_LIMIT = 500
_ERROR = RouterError(
    400, "The request's line or headers are malformed or too large (16 KiB, 500 headers at most).", code="bad_request"
)
_REFUSAL = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_ERROR.json())).encode() + b"\r\n\r\n" + _ERROR.json()
)


def _respond_and_disconnect(channel: Any) -> None:
    channel.transport.write(_REFUSAL)
    channel.loseConnection()


def install() -> None:
    """Replace twisted's bare 400 (a private hook, so only if it is there)."""
    from twisted.web import http

    if hasattr(http.HTTPChannel, "_respondToBadRequestAndDisconnect"):
        http.HTTPChannel._respondToBadRequestAndDisconnect = _respond_and_disconnect  # type: ignore[method-assign]
    # One line over 16 KiB: LineReceiver's default just drops the connection without a word.
    http.HTTPChannel.lineLengthExceeded = lambda channel, line: _respond_and_disconnect(channel)  # type: ignore[method-assign]
    _install_body_limits(http)


# -- request bodies under daphne --------------------------------------------------------------
#
# Twisted reads a whole request body (into a temporary file past 100 kB) before daphne hands
# the request to the application, so the body limit and the read deadline of
# ``routing.relay.edge`` would come too late under daphne: a multi-gigabyte POST would fill
# the disk and a dripped body would hold its connection for ever. The same limits are applied
# here, while twisted parses the body: Content-Length over the path's limit refused before a
# byte of it is read, a chunked body refused once over, a body still incomplete after
# SIRAYA_BODY_READ_SECONDS refused with 408; each answered as the edge answers, then closed.


def _refuse_body(channel: Any, error: RouterError) -> None:
    if getattr(channel, "_siraya_refused", False):
        return
    channel._siraya_refused = True
    _cancel_body_timer(channel)
    body, content_type = edge.refusal_body(channel._siraya_path, error)
    reason = {408: b"Request Timeout", 413: b"Payload Too Large"}.get(error.status, b"Error")
    channel.transport.write(
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
        % (error.status, reason, content_type, len(body))
        + body
    )
    channel.loseConnection()


def _cancel_body_timer(channel: Any) -> None:
    timer = getattr(channel, "_siraya_timer", None)
    if timer is not None and timer.active():
        timer.cancel()
    channel._siraya_timer = None


def _install_body_limits(http: Any) -> None:
    from django.conf import settings

    all_headers_received = http.HTTPChannel.allHeadersReceived
    all_content_received = http.HTTPChannel.allContentReceived
    handle_content_chunk = http.Request.handleContentChunk

    def headers_received(channel: Any) -> None:
        # As daphne builds the scope's path (percent-decoded), so the limit is the one its path
        # gets. ``_path`` is twisted's own: should a release rename it, the API's limit applies.
        raw = getattr(channel, "_path", None)
        path = edge.API_PREFIX if raw is None else unquote(raw.split(b"?", 1)[0].decode("latin-1"))
        limit = edge.body_limit(path)
        channel._siraya_path, channel._siraya_limit, channel._siraya_size = path, limit, 0
        channel._siraya_refused, channel._siraya_timer = False, None
        if channel.length is not None and channel.length > limit:
            _refuse_body(channel, edge.too_large(limit))
            return
        all_headers_received(channel)
        if channel.length != 0:  # a body follows (declared, or chunked: None)
            seconds = settings.SIRAYA_BODY_READ_SECONDS
            channel._siraya_timer = channel.callLater(seconds, lambda: _refuse_body(channel, edge.too_slow(seconds)))

    def content_chunk(request: Any, data: bytes) -> None:
        channel = request.channel
        if getattr(channel, "_siraya_refused", False):
            return  # the rest of a buffer already read when the body was refused
        channel._siraya_size += len(data)
        if channel._siraya_size > channel._siraya_limit:
            _refuse_body(channel, edge.too_large(channel._siraya_limit))
            return
        handle_content_chunk(request, data)

    def content_received(channel: Any) -> None:
        _cancel_body_timer(channel)
        if getattr(channel, "_siraya_refused", False):
            return  # answered already: the application never sees this request
        all_content_received(channel)

    http.HTTPChannel.allHeadersReceived = headers_received
    http.HTTPChannel.allContentReceived = content_received
    http.Request.handleContentChunk = content_chunk


# -- request heads under uvicorn with httptools ---------------------------------------------
#
# httptools (llhttp) sets no bound on a request's line or headers: it gathers a header of any
# size in memory (100 MB of one header cost the process 100 MB), and uvicorn keeps every
# header. The head's bytes are counted as they arrive, up to the blank line that ends it, and
# a head over ``HEAD_LIMIT_BYTES`` or with more than ``HEADER_LIMIT`` headers is refused as
# twisted refuses it. Every other 400 of the parser gets the same JSON body.


class _Head:
    """The request head being read on one connection: whether one is, its bytes so far, the last
    bytes of the previous read (the blank line may straddle two reads), and its headers so far."""

    __slots__ = ("bytes", "headers", "reading", "tail")

    def __init__(self) -> None:
        self.reading, self.bytes, self.tail, self.headers = True, 0, b"", 0


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request head bounded, and JSON 400s; it tells the
    relay of a client's disconnect by a call (``edge.DISCONNECT_CALLBACK``), at once and without a
    second task per request waiting on ``receive()``.

    Its state is one attribute: uvicorn's protocol has 28, and past 30 an instance's attributes
    no longer share their keys with the class's other instances (a dict of ~1.6 KB instead of
    ~0.3 KB per connection: 0.7 KB of RSS per open stream in ``bench.memory``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = _Head()

    def data_received(self, data: bytes) -> None:
        head = self._head
        if head.reading:
            head.bytes += self._head_part(head, data)
            if head.bytes > HEAD_LIMIT_BYTES:
                self.send_400_response("")
                return
        super().data_received(data)

    @staticmethod
    def _head_part(head: _Head, data: bytes) -> int:
        """Return how many bytes of ``data`` belong to the head being read (up to its blank line)."""
        tail = head.tail
        if tail:  # the blank line may have begun in the previous reads
            end = (tail + data[:3]).find(b"\r\n\r\n")
            if end >= 0:
                return end + 4 - len(tail)
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            return end + 4
        head.tail = (tail + data[-3:])[-3:]
        return len(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head.headers += 1
        if self._head.headers > HEADER_LIMIT:
            raise ValueError("too many headers")  # httptools turns it into a parser error: a 400
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head.reading = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The next request on this connection starts a new head.
        self._head = _Head()
        super().on_message_complete()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[edge.DISCONNECT_CALLBACK] = None  # type: ignore[literal-required]  # set by the relay

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and cycle.disconnected:  # lost before its response completed
            callback = cast("Callable[[], None] | bool | None", cycle.scope.get(edge.DISCONNECT_CALLBACK))
            if callable(callback):
                callback()
            else:  # the relay has not set it yet: it will find the connection lost
                cycle.scope[edge.DISCONNECT_CALLBACK] = False  # type: ignore[literal-required]

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(_REFUSAL)
            self.transport.close()
