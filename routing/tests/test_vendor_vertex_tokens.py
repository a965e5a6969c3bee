"""Vertex AI end to end, access tokens: fetched once, refreshed before expiry, static, or refused.

``vertex_casts`` (``routing/tests/conftest.py``) routes ``test/gemini`` and ``test/claude`` to
one Vertex vendor with a service-account key the fake trusts.
"""

from __future__ import annotations

import time

from billing.services import api_key_create
from conftest import Cast, wait_settled
from fakevendors.vertex.oauth import service_account_key
from routing.services import model_create, vendor_create
from routing.vendors.vertex.auth import REFRESH_MARGIN


def test_static_access_token_is_used_as_is(live_router, fake_vertex, transactional_db):
    fake_vertex.issued["ya29.static-operator-token"] = time.monotonic() + 3600
    options = {"project": fake_vertex.project, "location": fake_vertex.location}
    vendor = vendor_create("vertex", "vertex", fake_vertex.url, options, {"access_token": "ya29.static-operator-token"})
    model_create("test/gemini", deployments=[(vendor, "gemini-2.5-flash", 0, 1)])
    api_key, plaintext = api_key_create("tester")
    response = Cast(live_router.url, plaintext, api_key, "test/gemini").chat()
    wait_settled()
    assert response.status_code == 200
    assert fake_vertex.api_requests[-1].headers["authorization"] == "Bearer ya29.static-operator-token"
    assert fake_vertex.token_requests == []


def test_access_token_is_fetched_once_and_reused(vertex_casts, fake_vertex):
    for cast in [vertex_casts["gemini"], vertex_casts["claude"], vertex_casts["gemini"]]:
        assert cast.chat().status_code == 200
    assert len(fake_vertex.token_requests) == 1
    assert len({r.headers["authorization"] for r in fake_vertex.api_requests}) == 1


def test_access_token_is_refreshed_before_it_expires(vertex_casts, fake_vertex):
    lifetime = 4.0  # long enough for the first two requests on a busy machine
    fake_vertex.scenario.expires_in = int(REFRESH_MARGIN + lifetime)  # usable for 4 s under the router's margin
    assert vertex_casts["gemini"].chat().status_code == 200
    assert vertex_casts["claude"].chat().status_code == 200
    assert len(fake_vertex.token_requests) == 1
    # The router counts the token's life from just before it asked (before the fake received
    # the request; one monotonic clock), however long the first request took on a busy machine.
    asked = fake_vertex.token_requests[0].received_at
    time.sleep(max(0.0, asked + lifetime + 0.3 - time.monotonic()))
    assert vertex_casts["gemini"].chat().status_code == 200
    assert len(fake_vertex.token_requests) == 2
    bearers = [r.headers["authorization"] for r in fake_vertex.api_requests]
    assert bearers[0] == bearers[1] != bearers[2]


def test_token_endpoint_refusing_the_key_is_a_clear_502(vertex_casts, fake_vertex):
    fake_vertex.trust(service_account_key(fake_vertex.url + "/token"))  # a different key than the vendor's
    response = vertex_casts["gemini"].chat()  # not streamed: a keepalive could come before the refusal
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "vendor_auth_failed"
    assert "invalid_grant" not in response.text
    record = vertex_casts["gemini"].record(response.headers["x-generation-id"])
    assert "refused the service account" in record.error_message and "invalid_grant" in record.error_message
    assert fake_vertex.api_requests == []
    assert "PRIVATE KEY" not in response.text
