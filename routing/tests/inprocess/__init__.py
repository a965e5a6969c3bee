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

``scripted`` holds the vendors, ``exchange`` the client; here are the cast of a test (a key, models
on scripted or real vendors, one event loop per test) and its fixtures.

Only stable surfaces are used: the ASGI entry, the adapter interface and registry, the models,
the services that create keys and models, and settings. No relay internals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from billing.models import ApiKey, UsageRecord, UsageStatus
from billing.services import api_key_create
from routing.models import RouterModel, Vendor
from routing.services import model_create, vendor_create
from routing.tests.inprocess.exchange import Exchange, after_messages, at
from routing.tests.inprocess.scripted import (
    SCRIPTS,
    Script,
    ScriptedAdapter,
    answer,
    answer_text,
    failure,
    role_batch,
    word_batches,
)
from routing.vendors import ADAPTERS, http

__all__ = [
    "PROMPT", "SCRIPTS", "Exchange", "InProcessRelay", "Script", "ScriptedAdapter", "after_messages", "answer",
    "answer_text", "at", "attempts", "chat_body", "cost", "failure", "relay", "relay_openai",
    "relay_threads_disconnected", "role_batch", "word_batches",
]  # fmt: skip

PROMPT = [{"role": "user", "content": "Tell me a story."}]


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
