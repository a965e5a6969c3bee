"""Each vendor kind's request carries its attempt span's ``traceparent`` (a SigV4-signed Bedrock
request still verifies), the attempt span names the host and port the request went to (the
region's endpoint when a vendor has no base URL), and no vendor credential reaches a span."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

from fakevendors.azure import FakeAzure
from fakevendors.bedrock import API_KEY, REGION, SECRET_ACCESS_KEY, FakeBedrock
from fakevendors.byteplus import FakeBytePlus
from fakevendors.onerouter import FakeOneRouter
from fakevendors.openai import FakeOpenAI
from fakevendors.otlp import OtlpReceiver
from fakevendors.server import FakeServer
from fakevendors.vertex import FakeVertex
from fakevendors.vertex.oauth import service_account_key
from routing.tests.bedrock_helpers import MODEL_ID, SIGV4
from routing.tests.tracing_helpers import Exchange, assert_no_content, chat, exchange, request_trace, served_by
from routing.tests.vertex_helpers import UPSTREAM

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("writer_connection_closed")]

# kind -> (the fake, its deployment: (kind, base URL, options), credentials, upstream model).
Deployment = tuple[tuple[str, str, dict[str, Any]], dict[str, Any], str]
VENDORS: dict[str, tuple[Callable[[], FakeServer], Callable[[Any], Deployment]]] = {
    "openai": (FakeOpenAI, lambda f: (("openai", f.url + "/v1", {}), {"api_key": "sk-vendor-t"}, "")),
    "azure": (FakeAzure, lambda f: (("azure", f.url, {}), {"api_key": f.api_key}, "")),
    "byteplus": (FakeBytePlus, lambda f: (("byteplus", f.url, {}), {"api_key": f.api_key}, "")),
    "onerouter": (FakeOneRouter, lambda f: (("onerouter", f.url + "/v1", {}), {"api_key": f.api_key}, "")),
    "bedrock sigv4": (FakeBedrock, lambda f: (("bedrock", f.url, {"region": REGION}), SIGV4, MODEL_ID)),
    "bedrock api key": (
        lambda: FakeBedrock(api_key=API_KEY),
        lambda f: (("bedrock", f.url, {"region": REGION}), {"api_key": API_KEY}, MODEL_ID),
    ),
}
PROVIDERS = {"openai": "openai", "azure": "azure.ai.openai", "bedrock": "aws.bedrock", "vertex": "gcp.vertex_ai"}


@pytest.fixture
def vertex() -> Iterator[tuple[FakeVertex, dict[str, Any]]]:
    with FakeVertex() as fake:
        account = service_account_key(fake.url + "/token")
        fake.trust(account)
        yield fake, account


def assert_carries_the_attempt(
    receiver: OtlpReceiver, vendor: FakeServer, kind: str, seen: Exchange, secrets: tuple[str, ...]
) -> None:
    """The vendor got the attempt span's traceparent; the span names the host and port it went to."""
    assert seen.status == 200, seen.body
    spans = request_trace(receiver, seen.generation_id, 4)
    (attempt,) = [s for s in spans if s.kind == "client"]
    _, trace_id, parent_id, _ = vendor.last().headers["traceparent"].split("-")
    assert (trace_id, parent_id) == (attempt.trace_id, attempt.span_id)
    assert (attempt.attributes["server.address"], attempt.attributes["server.port"]) == ("127.0.0.1", vendor.port)
    assert attempt.attributes["gen_ai.provider.name"] == PROVIDERS.get(kind, kind)
    assert_no_content(spans, *secrets)


@pytest.mark.parametrize("name", VENDORS)
def test_each_vendor_kind_gets_the_attempts_traceparent(receiver, name):
    make, deployment = VENDORS[name]
    with make() as vendor:
        (kind, url, options), credentials, upstream = deployment(vendor)
        setup = served_by((kind, url, options), credentials=credentials, upstream=upstream)
        seen = exchange(setup.key, chat(setup, stream=True))
        assert_carries_the_attempt(receiver, vendor, kind, seen, (setup.key, *map(str, credentials.values())))
    if isinstance(vendor, FakeBedrock):
        assert vendor.auth_failures == []  # the SigV4 signature (or the key) still holds
        signed = vendor.last().headers["authorization"]
        assert "traceparent" not in signed  # sent outside the signature, as AWS allows


def test_vertex_gets_the_attempts_traceparent(receiver, vertex):
    fake, account = vertex
    options = {"project": fake.project, "location": fake.location}
    setup = served_by(
        ("vertex", fake.url, options), credentials={"credentials_json": account}, upstream=UPSTREAM["gemini"]
    )
    seen = exchange(setup.key, chat(setup, stream=True))
    assert_carries_the_attempt(receiver, fake, "vertex", seen, (setup.key, account["private_key"].splitlines()[1]))


@pytest.mark.parametrize(
    ("kind", "options", "credentials", "host"),
    [
        ("bedrock", {"region": "eu-west-3"}, {"aws_access_key_id": "AKIAFAKE", "aws_secret_access_key": SECRET_ACCESS_KEY},
         "bedrock-runtime.eu-west-3.amazonaws.com"),
        ("vertex", None, None, "europe-west4-aiplatform.googleapis.com"),
    ],
)  # fmt: skip
def test_attempt_names_the_regions_endpoint_of_a_vendor_without_base_url(
    receiver, vertex, kind, options, credentials, host
):
    fake, account = vertex
    if kind == "vertex":  # its token still comes from the fake: only the API request is refused
        options, credentials = {"project": fake.project, "location": "europe-west4"}, {"credentials_json": account}
    setup = served_by(
        (kind, "", options), credentials=credentials, upstream=MODEL_ID if kind == "bedrock" else "gemini-2.5-flash"
    )
    with override_settings(SIRAYA_VENDOR_HOSTS=["127.0.0.1"]):  # the request is refused before it leaves
        seen = exchange(setup.key, chat(setup))
    assert seen.status == 502

    spans = request_trace(receiver, seen.generation_id, 4)
    (attempt,) = [s for s in spans if s.kind == "client"]
    assert attempt.attributes["error.type"] == "vendor_host_refused"
    assert (attempt.attributes["server.address"], attempt.attributes["server.port"]) == (host, 443)
