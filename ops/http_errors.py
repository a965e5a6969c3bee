"""OpenAI-shaped answers to requests refused by the HTTP parser itself (twisted, under daphne).

Twisted refuses malformed requests before any application sees them: a header line or all
headers over 16 KiB, more than 500 headers, control bytes in a header, a bad request line. Its answer is a
bare ``400 Bad Request`` with no body; this gives it the router's error body, so every
client error carries ``{"error": {...}}``. The connection is still closed afterwards, as
twisted does (the rest of such a request cannot be trusted).
"""

from __future__ import annotations

from typing import Any

from routing.errors import RouterError

_ERROR = RouterError(
    400, "The request's line or headers are malformed or too large (16 KiB, 500 headers at most).", code="bad_request"
)


def _respond_and_disconnect(channel: Any) -> None:
    body = _ERROR.json()
    channel.transport.write(
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    channel.loseConnection()


def install() -> None:
    """Replace twisted's bare 400 (a private hook, so only if it is there)."""
    from twisted.web import http

    if hasattr(http.HTTPChannel, "_respondToBadRequestAndDisconnect"):
        http.HTTPChannel._respondToBadRequestAndDisconnect = _respond_and_disconnect  # type: ignore[method-assign]
    # One line over 16 KiB: LineReceiver's default just drops the connection without a word.
    http.HTTPChannel.lineLengthExceeded = lambda channel, line: _respond_and_disconnect(channel)  # type: ignore[method-assign]
