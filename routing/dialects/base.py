"""The seam between the relay and a client API.

A dialect parses its API's request body into the canonical request (``ChatRequest``: what
vendor adapters take), and renders what the relay hands it back in the API's own format:
canonical events (chunks of OpenAI-shaped ``choices``, as vendor adapters yield them) as a
stream, a whole answer as one body, errors before and during a stream, the keepalive. The
relay, the ledger and the vendor adapters know nothing of any client API; adding one is a
module here and a line in ``routing.relay.entry``. An API that keeps state between requests
(the Responses API's stored responses) has a ``memory``: the relay asks it what a request
continues before admission, and hands it the finished answer before settlement.

Embeddings have the non-stream half only (``EmbeddingDialect``): the request parses into
``EmbeddingRequest`` and the answer is one body; every API shares ``ClientApi`` (its name,
where its key is, its error shape).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from routing.canonical import ChatRequest, EmbeddingRequest
from routing.errors import RouterError

if TYPE_CHECKING:
    from routing.vendors.base import TextRun

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
    cached_tokens: int = 0  # of the prompt, read from the vendor's cache
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0  # of the prompt, written to the vendor's cache


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
    native: dict[str, Any] | None = None  # the vendor's own answer object (``Completion.native``)


class StreamRenderer(Protocol):
    """One streamed answer's canonical events in a client API's format: one per vendor attempt;
    an error after the stream began is rendered by the renderer of the attempt that began it."""

    def chunk(self, choices: Choices, extra: dict[str, Any] | None, native: dict[str, Any] | None = None) -> bytes:
        """The bytes of one canonical chunk; ``native``: the vendor's own event it was read from, if any
        (``ChunkEvent.native``), for the dialect whose wire format it is to relay as it came."""
        ...

    def text_run(self, run: TextRun) -> bytes | None:
        """The bytes of a run of text chunks (``TextRun``), the same as its ``chunks()`` one by one
        would be; None to have them rendered one by one."""
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


class Memory(Protocol):
    """What a client API keeps between requests (the Responses API's stored responses)."""

    async def recall(self, request: ChatRequest, key_id: int) -> ChatRequest:
        """Return ``request`` with what the key's earlier request it continues left (its input
        counted, so before admission), or raise ``RouterError`` when there is none."""
        ...

    def keep(
        self, request: ChatRequest, key_id: int, answer: Answer | None, renderer: StreamRenderer | None
    ) -> Awaitable[None] | None:
        """Queue a finished answer (``answer`` for a whole one, the stream's ``renderer`` for a
        stream) to be kept for the key, ahead of the settlement queued next; return what to await
        for it (None: nothing to keep). Never raises: a failed write is logged, the client has its answer."""
        ...


class ClientApi(Protocol):
    """What every client API tells the relay: its name, where its key is, how its errors look."""

    @property
    def name(self) -> str:
        """The API's name, as the router's logs and metrics say it."""
        ...

    @property
    def api(self) -> str:
        """The API's name on its usage records (a ``billing.models.UsageApi`` value)."""
        ...

    def authorization(self, header: Callable[[bytes], str]) -> str:
        """The request's API key as an ``Authorization`` value (``Bearer sk-siraya-...``); "" for none.
        ``header(name)`` reads one request header (lower-case name)."""
        ...

    def error_body(self, error: RouterError) -> bytes:
        """The JSON body of an error answered before any of the answer."""
        ...


class Dialect(ClientApi, Protocol):
    """A client API that asks for chat: parsed into the canonical ``ChatRequest``, answered whole or streamed."""

    keepalive: bytes  # sent when nothing else was for SIRAYA_KEEPALIVE_SECONDS
    stream_headers: Headers  # content type and caching of a stream

    @property
    def memory(self) -> Memory | None:
        """What the API keeps between requests; None for an API that keeps nothing."""
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


@dataclass(frozen=True, slots=True)
class EmbeddingAnswer:
    """One vector per input, as the relay hands them to the embeddings dialect."""

    model: str  # the router's name of the model that answered
    vectors: list[list[float]]
    prompt_tokens: int  # the vendor's figure, else the router's count
    request: EmbeddingRequest


class EmbeddingDialect(ClientApi, Protocol):
    """A client API that asks for embeddings: no stream, one JSON answer (``routing.relay.embeddings``)."""

    def parse(self, body: bytes) -> EmbeddingRequest:
        """Return the canonical embedding request, or raise ``RouterError`` (400) naming the bad field."""
        ...

    def answer(self, answer: EmbeddingAnswer) -> bytes:
        """The JSON body of the answer."""
        ...
