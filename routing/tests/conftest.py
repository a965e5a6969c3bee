"""Fixtures shared by the routing tests: a fake Vertex AI and a service-account key it trusts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fakevendors.vertex import FakeVertex, service_account_key
from routing.tests.inprocess import relay, relay_openai, relay_threads_disconnected  # noqa: F401  (the in-process relay fixture)


@pytest.fixture
def fake_vertex() -> Iterator[FakeVertex]:
    with FakeVertex() as fake:
        yield fake


@pytest.fixture
def service_account(fake_vertex: FakeVertex) -> dict[str, Any]:
    info = service_account_key(fake_vertex.url + "/token")
    fake_vertex.trust(info)
    return info
