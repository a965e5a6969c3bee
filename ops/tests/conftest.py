"""Fixtures of the operations and security tests."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from billing.services import api_key_create
from conftest import Cast, LiveServer, wait_settled
from routing.services import model_create, vendor_create

# Deterministic and bounded: the same examples on every run, no example database on disk.
settings.register_profile(
    "siraya",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("siraya")

DEMO_MODEL = "demo/instant"
DEMO_EMBEDDING_MODEL = "demo/embed-instant"


def make_demo_cast(url: str, **key_fields: Any) -> Cast:
    """A demo vendor that answers at once (no delay between words), a chat and an embedding model on it, and a key."""
    vendor = vendor_create("demo-instant", "demo", options={"token_delay": 0})
    model_create(
        DEMO_MODEL,
        deployments=[(vendor, "echo", 0, 1)],
        input_price=Decimal("1"),
        output_price=Decimal("2"),
        context_length=8192,
    )
    model_create(
        DEMO_EMBEDDING_MODEL, deployments=[(vendor, "embed", 0, 1)], input_price=Decimal("1"), mode="embedding"
    )
    api_key, plaintext = api_key_create("demo-tester", **key_fields)
    return Cast(url, plaintext, api_key, DEMO_MODEL)


@pytest.fixture
def demo_cast(live_router: LiveServer, transactional_db: None) -> Iterator[Cast]:
    yield make_demo_cast(live_router.url)
    wait_settled()
