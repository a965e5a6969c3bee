"""Fixtures shared by the routing tests: a fake Vertex AI, a service-account key it trusts and
models routed to it; a fake Bedrock with a model and a key routed to it."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from billing.services import api_key_create
from conftest import Cast, wait_settled
from fakevendors.bedrock import REGION, FakeBedrock
from fakevendors.vertex import FakeVertex
from fakevendors.vertex.oauth import service_account_key
from routing.services import model_create, vendor_create
from routing.tests.bedrock_helpers import MODEL_ID, SIGV4
from routing.tests.inprocess import relay, relay_openai, relay_threads_disconnected  # noqa: F401  (the in-process relay fixture)
from routing.tests.tracing_helpers import receiver, writer_connection_closed  # noqa: F401  (the tracing tests' fixtures)
from routing.tests.vertex_helpers import UPSTREAM


@pytest.fixture
def fake_vertex() -> Iterator[FakeVertex]:
    with FakeVertex() as fake:
        yield fake


@pytest.fixture
def service_account(fake_vertex: FakeVertex) -> dict[str, Any]:
    info = service_account_key(fake_vertex.url + "/token")
    fake_vertex.trust(info)
    return info


@pytest.fixture
def vertex_casts(
    live_router: Any, fake_vertex: FakeVertex, service_account: dict[str, Any], transactional_db: None
) -> Iterator[dict[str, Cast]]:
    """Models ``test/gemini`` and ``test/claude`` on one Vertex vendor, and a key for both."""
    options = {"project": fake_vertex.project, "location": fake_vertex.location}
    vendor = vendor_create("vertex", "vertex", fake_vertex.url, options, {"credentials_json": service_account})
    for dialect, upstream in UPSTREAM.items():
        deployments = [(vendor, upstream, 0, 1)]
        model_create(f"test/{dialect}", deployments=deployments, input_price=Decimal("1"), output_price=Decimal("2"))
    api_key, plaintext = api_key_create("tester")
    yield {dialect: Cast(live_router.url, plaintext, api_key, f"test/{dialect}") for dialect in UPSTREAM}
    wait_settled()


@pytest.fixture
def bedrock(live_router, transactional_db) -> Iterator[Any]:
    """Return ``make(credentials=..., upstream=..., **fake)``: a fake Bedrock and a cast that routes to it."""
    fakes: list[FakeBedrock] = []

    def make(credentials: dict[str, str] | None = None, upstream: str = MODEL_ID, **fake_options: Any):
        fake = FakeBedrock(**fake_options)
        fake.start()
        fakes.append(fake)
        vendor = vendor_create("aws", "bedrock", fake.url, {"region": REGION}, credentials or SIGV4)
        model_create(
            "test/bedrock",
            deployments=[(vendor, upstream, 0, 1)],
            input_price=Decimal("1"),
            output_price=Decimal("2"),
        )
        api_key, plaintext = api_key_create("tester")
        return Cast(live_router.url, plaintext, api_key, "test/bedrock"), fake

    yield make
    wait_settled()
    for fake in fakes:
        fake.stop()
