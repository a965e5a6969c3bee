"""Drive the relay in process: scripted ASGI exchanges and scripted vendors behind the real adapter interface.

An ``Exchange`` is one request to the ASGI entry with a scripted ``receive``/``send``: the body
(whole or in parts), a disconnect at a chosen moment (while the body is read, once the vendor is
called, after N body messages reached the client, at a time), and a client that stops reading
(``send`` blocks, which the stall guard must notice). It records what the client got: status,
headers, body bytes and SSE events.

A ``Script`` says what one vendor does: yield these batches of events, then hang until cancelled
or fail with this ``UpstreamError``; it records each call and whether the adapter's ``finally``
ran (the vendor connection was closed). ``ScriptedAdapter`` is a real ``VendorAdapter`` of kind
``scripted``, registered in ``routing.vendors.ADAPTERS`` by the ``relay`` fixture: the relay
reaches it exactly as it reaches any vendor.

Only stable surfaces are used: the ASGI entry, the adapter interface and registry, the models,
the services that create keys and models, and settings. No relay internals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application
from django.db import connections

from billing.models import ApiKey, UsageRecord, UsageStatus
from billing.services import api_key_create
from fakevendors.openai import words
from routing.errors import UpstreamError
from routing.models import RouterModel, Vendor
from routing.relay.entry import serve_http
from routing.services import model_create, vendor_create
from routing.vendors import ADAPTERS, http
from routing.vendors.base import ChunkEvent, Completion, StreamEvent, UpstreamCall, Usage, UsageEvent, VendorAdapter
from routing.vendors.http import vendor_status_to_client

# Bound on one exchange: a relay that never answers fails the test instead of hanging the run.
EXCHANGE_SECONDS = 10.0
PROMPT = [{"role": "user", "content": "Tell me a story."}]

# -- scripted vendors -------------------------------------------------------------------------


@dataclass
class Script:
    """What the vendor named ``name`` does for each call, and what it saw."""

    name: str
    batches: list[list[StreamEvent]] = field(default_factory=list)
    # After the batches: wait until cancelled (``hang``), else fail with ``error`` if set.
    hang: bool = False
    error: UpstreamError | None = None
    delay: float = 0.0  # seconds before each batch
    first_delay: float = 0.0  # seconds before the first batch (and before a whole answer)
    calls: list[UpstreamCall] = field(default_factory=list)
    closed: int = 0  # calls whose ``finally`` ran: the vendor connection was released
    closed_at: float | None = None  # time.monotonic() of the last release
    yielded: int = 0  # batches handed to the relay

    def text(self) -> str:
        """Return the answer text of all batches (what a whole answer carries)."""
        return "".join(
            choice.get("delta", {}).get("content") or ""
            for batch in self.batches
            for event in batch
            if isinstance(event, ChunkEvent)
            for choice in event.choices
        )

    def usage(self) -> Usage | None:
        reported = [event.usage for batch in self.batches for event in batch if isinstance(event, UsageEvent)]
        return reported[-1] if reported else None

    def finish_reason(self) -> str | None:
        reasons = [
            choice["finish_reason"]
            for batch in self.batches
            for event in batch
            if isinstance(event, ChunkEvent)
            for choice in event.choices
            if choice.get("finish_reason")
        ]
        return reasons[-1] if reasons else None


def role_batch() -> list[StreamEvent]:
    return [ChunkEvent([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]


def word_batches(count: int, start: int = 0) -> list[list[StreamEvent]]:
    """``count`` batches of one content chunk each; every word is one token (``fakevendors.openai.WORDS``)."""
    return [
        [ChunkEvent([{"index": 0, "delta": {"content": word}, "finish_reason": None}])]
        for word in words(start + count)[start:]
    ]


def answer(
    count: int, *, usage: Usage | None = None, finish: str = "stop", role: bool = True
) -> list[list[StreamEvent]]:
    """The batches of a whole answer of ``count`` one-token words, with ``usage`` reported at the end."""
    end: list[StreamEvent] = [ChunkEvent([{"index": 0, "delta": {}, "finish_reason": finish}])]
    if usage is not None:
        end.append(UsageEvent(usage))
    return [*([role_batch()] if role else []), *word_batches(count), end]


def answer_text(count: int) -> str:
    return "".join(words(count))


SCRIPTS: dict[str, Script] = {}


class ScriptedAdapter(VendorAdapter):
    """A vendor that plays the ``Script`` registered under its vendor's name."""

    kind = "scripted"
    secret_names = ()

    def _script(self, call: UpstreamCall) -> Script:
        script = SCRIPTS[self.vendor.name]
        script.calls.append(call)
        return script

    async def stream(self, call: UpstreamCall) -> AsyncIterator[list[StreamEvent]]:
        script = self._script(call)
        try:
            await asyncio.sleep(script.first_delay)
            for batch in script.batches:
                if script.delay:
                    await asyncio.sleep(script.delay)
                script.yielded += 1
                yield list(batch)  # the relay clears each batch it is handed
            if script.hang:
                await asyncio.get_running_loop().create_future()
            if script.error is not None:
                raise script.error
        finally:
            script.closed += 1
            script.closed_at = time.monotonic()

    async def complete(self, call: UpstreamCall) -> Completion:
        script = self._script(call)
        try:
            await asyncio.sleep(script.first_delay)
            if script.hang:
                await asyncio.get_running_loop().create_future()
            if script.error is not None:
                raise script.error
            message = {"role": "assistant", "content": script.text()}
            choice = {"index": 0, "message": message, "finish_reason": script.finish_reason() or "stop"}
            return Completion([choice], script.usage())
        finally:
            script.closed += 1
            script.closed_at = time.monotonic()


def failure(vendor_status: int = 500, *, code: str | None = None, retry_after: float | None = None) -> UpstreamError:
    """The error an HTTP vendor's adapter raises for an answer of ``vendor_status``."""
    return UpstreamError(
        vendor_status_to_client(vendor_status),
        f"scripted vendor failure {vendor_status}",
        code,
        retryable=vendor_status not in (400, 413, 422),
        retry_after=retry_after,
        vendor_status=vendor_status,
    )


# -- exchanges with the ASGI entry --------------------------------------------------------------


Condition = Callable[["Exchange"], bool]


@dataclass
class Exchange:
    """One request through the ASGI entry and what the client got.

    ``body_parts`` splits the body into that many ``http.request`` messages; with
    ``disconnect_in_body`` the client leaves instead of sending the last part. ``disconnect_when``
    is checked every millisecond once the request is running (``after_messages``, ``at``, or any
    condition on the exchange or a script). ``stop_reading_after`` makes ``send`` block forever
    from that body message on: a client that stopped reading. ``during`` runs a coroutine once
    ``during_when`` holds (a server shutdown, say).
    """

    body: bytes
    request_headers: list[tuple[bytes, bytes]]
    path: str = "/v1/chat/completions"
    method: str = "POST"
    query: bytes = b""
    body_parts: int = 1
    disconnect_in_body: bool = False
    disconnect_when: Condition | None = None
    disconnect_after: int | None = None  # body messages received, then the client leaves at once
    stop_reading_after: int | None = None
    during: Callable[[], Awaitable[Any]] | None = None
    during_when: Condition | None = None
    # What the client got.
    status: int = 0
    response_headers: dict[bytes, bytes] = field(default_factory=dict)
    raw: bytes = b""
    messages: int = 0  # body messages sent to the client
    body_reads: int = 0
    started_at: float = 0.0
    disconnected: bool = False
    disconnected_at: float | None = None
    blocked: bool = False  # a send is blocked: the client stopped reading

    def __post_init__(self) -> None:
        self._gone = asyncio.Event()  # binds to the running loop on first wait (Python 3.10+)

    # -- the client's side of ASGI -----------------------------------------------------------

    async def run(self) -> None:
        self.started_at = time.monotonic()
        watchers = [asyncio.create_task(self._disconnect_when())]
        if self.during is not None:
            watchers.append(asyncio.create_task(self._run_during()))
        try:
            async with asyncio.timeout(EXCHANGE_SECONDS):
                await serve_http(django_application(), self.scope(), self.receive, self.send)
        finally:
            for watcher in watchers:
                watcher.cancel()

    def scope(self) -> dict[str, Any]:
        path = self.path
        return {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": self.method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": self.query,
            "headers": [
                (b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                (b"content-length", str(len(self.body)).encode()), *self.request_headers,
            ],
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        }  # fmt: skip

    async def receive(self) -> dict[str, Any]:
        if self.body_reads < self.body_parts:
            self.body_reads += 1
            last = self.body_reads == self.body_parts
            if last and self.disconnect_in_body:
                self.disconnect()
                return {"type": "http.disconnect"}
            size = -(-len(self.body) // self.body_parts)
            part = self.body[(self.body_reads - 1) * size : self.body_reads * size]
            return {"type": "http.request", "body": part, "more_body": not last}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.response_headers = dict(message["headers"])
            return
        if self.stop_reading_after is not None and self.messages >= self.stop_reading_after:
            self.blocked = True
            await asyncio.get_running_loop().create_future()  # until the relay gives up on the client
        if self.disconnected:
            return  # the server drops what it writes to a closed connection
        self.messages += 1
        self.raw += message.get("body", b"")
        if self.messages == self.disconnect_after:
            self.disconnect()

    def disconnect(self) -> None:
        self.disconnected = True
        self.disconnected_at = time.monotonic()
        self._gone.set()

    async def _until(self, condition: Condition | None) -> None:
        """Return once ``condition`` holds, checked every millisecond (it reads plain attributes: no event to wait on)."""
        while True:
            if condition is None or condition(self):
                return
            await asyncio.sleep(0.001)

    async def _disconnect_when(self) -> None:
        if self.disconnect_when is not None:
            await self._until(self.disconnect_when)
            self.disconnect()

    async def _run_during(self) -> None:
        assert self.during is not None
        await self._until(self.during_when)
        await self.during()

    # -- what the client got -----------------------------------------------------------------

    @property
    def generation_id(self) -> str:
        return self.response_headers[b"x-generation-id"].decode()

    def json(self) -> Any:
        return orjson.loads(self.raw)

    # What an ``httpx.Response`` offers, so a test written against a live router reads the same.
    @property
    def status_code(self) -> int:
        return self.status

    @property
    def headers(self) -> httpx.Headers:
        return httpx.Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.response_headers.items()])

    @property
    def text(self) -> str:
        return self.raw.decode()

    def error(self) -> dict[str, Any]:
        assert self.response_headers[b"content-type"] == b"application/json", self.raw
        return dict(orjson.loads(self.raw)["error"])

    def events(self) -> list[Any]:
        """The SSE data payloads, parsed (``"[DONE]"`` kept as the string)."""
        payloads = [line[6:] for line in self.raw.split(b"\n") if line.startswith(b"data: ")]
        return [p.decode() if p == b"[DONE]" else orjson.loads(p) for p in payloads]

    def chunks(self) -> list[dict[str, Any]]:
        return [event for event in self.events() if isinstance(event, dict)]

    def comments(self) -> list[bytes]:
        return [line for line in self.raw.split(b"\n") if line.startswith(b":")]

    def answer(self) -> str:
        """The answer's text: the streamed deltas' content, or a whole answer's message."""
        if self.response_headers.get(b"content-type") == b"application/json":
            return "".join(choice["message"]["content"] or "" for choice in self.json()["choices"])
        return "".join(
            choice.get("delta", {}).get("content") or "" for chunk in self.chunks() for choice in chunk["choices"]
        )

    def finish_reasons(self) -> list[str]:
        """The finish reasons in order: of the streamed chunks, or of a whole answer's choices."""
        if self.response_headers.get(b"content-type") == b"application/json":
            return [choice["finish_reason"] for choice in self.json()["choices"]]
        return [
            choice["finish_reason"]
            for chunk in self.chunks()
            for choice in chunk.get("choices") or []
            if choice.get("finish_reason")
        ]


def after_messages(count: int) -> Condition:
    """A condition: the client has received ``count`` body messages."""
    return lambda exchange: exchange.messages >= count


def at(seconds: float) -> Condition:
    """A condition: ``seconds`` have passed since the request began."""
    return lambda exchange: time.monotonic() - exchange.started_at >= seconds


_django: list[Any] = []


def django_application() -> Any:
    """Django's ASGI application, for the paths that are not the relay's (made once)."""
    if not _django:
        _django.append(get_asgi_application())
    return _django[0]


# -- the cast of an in-process test ---------------------------------------------------------------


@dataclass
class InProcessRelay:
    """Scripted vendors, models deployed on them, a key, and exchanges with the ASGI entry.

    Every exchange of a test runs on the test's one event loop, as every request to one server
    process does: the in-memory limiters and cooldowns, kept per loop, last the whole test.
    """

    key: str
    api_key: ApiKey
    loop: asyncio.AbstractEventLoop
    model: str = "m"  # the model a chat request names unless it names another

    def vendor(self, script: Script) -> Vendor:
        """Register ``script`` and create its vendor (kind ``scripted``: not an operator's choice)."""
        SCRIPTS[script.name] = script
        return Vendor.objects.create(name=script.name, kind=ScriptedAdapter.kind)

    def deploy(
        self, model: str, *targets: Script | Vendor, price: str = "1", priorities: bool = True, **fields: Any
    ) -> RouterModel:
        """Create ``model`` served by ``targets`` (scripts, or vendors of a real kind) in order (priority 0, 1, ...):
        USD ``price`` per million prompt tokens and twice that per million completion tokens."""
        vendors = [self.vendor(t) if isinstance(t, Script) else t for t in targets]
        deployments = [(v, f"up-{v.name}", i if priorities else 0, 1) for i, v in enumerate(vendors)]
        return model_create(
            model, deployments=deployments, input_price=Decimal(price), output_price=2 * Decimal(price), **fields
        )

    def exchange(self, body: dict[str, Any] | bytes = b"", key: str | None = None, **options: Any) -> Exchange:
        """Send one request (a dict body is a chat body) through the ASGI entry and return what the client got.

        ``key`` None sends the relay's key, "" none at all; ``options`` are ``Exchange`` fields.
        """
        (exchange,) = self.together((body, {"key": key, **options}))
        return exchange

    def chat(self, exchange: dict[str, Any] | None = None, key: str | None = None, **body: Any) -> Exchange:
        """POST a chat request (``self.model`` and a short prompt unless given); ``exchange`` holds ``Exchange`` options."""
        return self.exchange(body, key, **(exchange or {}))

    def together(self, *requests: tuple[dict[str, Any] | bytes, dict[str, Any]]) -> list[Exchange]:
        """Run (body, ``Exchange`` options and ``key``) requests at once; a dict body is a chat body."""
        exchanges = []
        for body, options in requests:
            options = dict(options)
            key = options.pop("key", None)
            key = self.key if key is None else key
            headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
            payload = body if isinstance(body, bytes) else orjson.dumps(chat_body(**{"model": self.model, **body}))
            exchanges.append(Exchange(payload, headers, **options))

        async def run_all() -> None:
            await asyncio.gather(*(exchange.run() for exchange in exchanges))

        self.loop.run_until_complete(run_all())
        return exchanges

    def record(self, generation_id: str, timeout: float | None = None) -> UsageRecord:
        """Return the request's usage record; the ASGI call returns only once it is settled (no
        ``timeout`` to wait: the argument is there so that a test written for a live router reads the same)."""
        record = UsageRecord.objects.get(generation_id=generation_id)
        assert record.status != UsageStatus.IN_PROGRESS
        return record

    def only_record(self) -> UsageRecord:
        (record,) = UsageRecord.objects.filter(api_key=self.api_key)
        assert record.status != UsageStatus.IN_PROGRESS
        return record


@pytest.fixture(scope="session")
def relay_threads_disconnected(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """At the end of the run, end the database sessions the relay's threads keep open.

    The group-commit writer is a thread of this process with a persistent connection;
    PostgreSQL refuses to drop the test database while any session uses it.
    """
    yield
    with django_db_blocker.unblock():
        connection = connections["default"]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        connections.close_all()


@pytest.fixture
def relay(
    relay_threads_disconnected: None, transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InProcessRelay]:
    """An in-process relay with the scripted vendor kind registered and a key without limits.

    ``transactional_db``: the relay's writes go through the group-commit thread and its own
    connection, which must see the test's rows.
    """
    monkeypatch.setitem(ADAPTERS, ScriptedAdapter.kind, ScriptedAdapter)
    api_key, plaintext = api_key_create("in-process tester")
    loop = asyncio.new_event_loop()
    try:
        yield InProcessRelay(plaintext, api_key, loop)
    finally:
        SCRIPTS.clear()
        loop_close(loop)


# Every loop the harness made, kept for the session: the relay keeps some state per loop, keyed
# by ``id(loop)``, and a freed loop's id may be reused by the next test's loop.
_loops: list[asyncio.AbstractEventLoop] = []


def loop_close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on ``loop`` (background checkpoint writes, say) and close it, as ``asyncio.run`` does."""
    left = asyncio.all_tasks(loop)
    for task in left:
        task.cancel()

    async def ended() -> None:
        await asyncio.gather(*left, return_exceptions=True)
        await http.close_loop_client()  # the real adapters' connection pool of this loop
        # The thread that ran the relay's reads keeps its connection (CONN_MAX_AGE): close it, or
        # the test database cannot be flushed or dropped.
        await sync_to_async(connections.close_all)()

    loop.run_until_complete(ended())
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()
    _loops.append(loop)


def chat_body(**body: Any) -> dict[str, Any]:
    """A chat request body: model "m" and a short prompt unless given."""
    body.setdefault("model", "m")
    body.setdefault("messages", PROMPT)
    return body


def cost(prompt: int, completion: int, price: str = "1") -> Decimal:
    """The cost of a request to a model made by ``InProcessRelay.deploy`` at ``price``."""
    return (prompt + 2 * completion) * Decimal(price) / 1_000_000


@pytest.fixture
def relay_openai(relay: InProcessRelay, fake_openai: Any) -> InProcessRelay:
    """The in-process relay with model ``test/fake`` on the fake OpenAI vendor (USD 1 and 2 per
    million tokens): the real OpenAI adapter over loopback, without a router process."""
    vendor = vendor_create(
        "fake", "openai", fake_openai.url + "/v1", credentials={"api_key": "sk-vendor-secret-for-tests"}
    )
    model_create(
        "test/fake", deployments=[(vendor, "fake-model", 0, 1)], input_price=Decimal(1), output_price=Decimal(2)
    )
    return replace(relay, model="test/fake")


def attempts(record: UsageRecord) -> list[tuple[str, str]]:
    """(vendor, outcome) of each attempt the record lists."""
    return [(attempt["vendor"], attempt["outcome"]) for attempt in record.attempts]
