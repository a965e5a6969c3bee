"""The seam between the relay and a client API.

A dialect parses its API's request body into the canonical request (``ChatRequest``: what
vendor adapters take), and renders what the relay hands it back in the API's own format:
canonical events (chunks of OpenAI-shaped ``choices``, as vendor adapters yield them) as a
stream, a whole answer as one body, errors before and during a stream, the keepalive. The
relay, the ledger and the vendor adapters know nothing of any client API; adding one is a
module here and a line in ``routing.relay.entry``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from routing.canonical import ChatRequest
from routing.errors import RouterError

Headers = list[tuple[bytes, bytes]]
Choices = list[dict[str, Any]]

# What every streaming dialect sends: the stream's headers, and the router's keepalive, an SSE
# comment every SSE client skips (a dialect may send its API's own keepalive event instead).
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
KEEPALIVE_COMMENT = b": Siraya Model Router PROCESSING\n\n"


@dataclass(frozen=True, slots=True)
class ClientUsage:
    """The token figures a client is told: the vendor's where it reported them, else the router's count."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer as the relay hands it to a dialect (``generation_id`` is the router's)."""

    generation_id: str
    created: int  # unix seconds
    model: str  # the router's name of the model that answered
    choices: Choices  # canonical, cut at the client's limit if need be
    extra: dict[str, Any] | None
    usage: ClientUsage
    request: ChatRequest  # as the dialect parsed it (what the answer echoes back)


class StreamRenderer(Protocol):
    """One streamed answer's canonical events in a client API's format: one per vendor attempt;
    an error after the stream began is rendered by the renderer of the attempt that began it."""

    def chunk(self, choices: Choices, extra: dict[str, Any] | None) -> bytes:
        """The bytes of one canonical chunk."""
        ...

    def cut(self, choices: Choices) -> bytes:
        """The bytes that end an answer the router cut at the client's limit (``choices``: each
        cut choice with ``finish_reason: length``)."""
        ...

    def finish(self, usage: ClientUsage | None) -> bytes:
        """The bytes that end a complete stream; ``usage`` when the client asked for it."""
        ...

    def error(self, error: RouterError) -> bytes:
        """The bytes of an error after the stream began; they end the stream."""
        ...


class Dialect(Protocol):
    name: str  # the API's name, as the router's logs and metrics say it
    api: str  # the API's name on its usage records (a billing.models.UsageApi value)
    keepalive: bytes  # sent when nothing else was for SIRAYA_KEEPALIVE_SECONDS
    stream_headers: Headers  # content type and caching of a stream

    def authorization(self, header: Callable[[bytes], str]) -> str:
        """The request's API key as an ``Authorization`` value (``Bearer sk-siraya-...``); "" for none.
        ``header(name)`` reads one request header (lower-case name)."""
        ...

    def parse(self, body: bytes) -> ChatRequest:
        """Return the canonical request, or raise ``RouterError`` (400) naming the bad field."""
        ...

    def wants_usage(self, request: ChatRequest) -> bool:
        """Whether the end of a stream carries the usage figures."""
        ...

    def stream(self, request: ChatRequest, generation_id: str, created: int, model: str) -> StreamRenderer: ...

    def answer(self, answer: Answer) -> bytes:
        """The JSON body of a whole answer."""
        ...

    def error_body(self, error: RouterError) -> bytes:
        """The JSON body of an error answered before any of the answer."""
        ...
