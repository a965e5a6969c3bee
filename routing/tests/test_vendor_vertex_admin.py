"""A Vertex vendor set up in the admin with a pasted service-account key, used by the live router."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import orjson
import pytest
from django.urls import reverse

from billing.services import api_key_create
from conftest import Cast, wait_settled
from fakevendors.vertex import FakeVertex
from fakevendors.vertex.oauth import service_account_key
from routing.dialects.chat.schema import parse_chat_request
from routing.errors import UpstreamError
from routing.models import Vendor
from routing.services import model_create, vendor_create
from routing.vendors import adapter_class, http
from routing.vendors.base import UpstreamCall, VendorConfig


def add_url() -> str:
    return reverse("admin:routing_vendor_add") + "?kind=vertex"


def vertex_post(fake: FakeVertex, **fields: str) -> dict[str, str]:
    return {
        "name": "gcp",
        "base_url": fake.url,
        "enabled": "on",
        "option_project": fake.project,
        "option_location": fake.location,
        **fields,
    }


def key_material(info: dict) -> str:
    """A piece of the private key that any echo of the pasted text would contain."""
    return info["private_key"].splitlines()[5]


def field_errors(response, field: str) -> list[str]:
    assert response.status_code == 200, response.status_code
    return list(response.context["adminform"].form.errors.get(field, []))


@pytest.mark.django_db(transaction=True)
def test_service_account_key_pasted_in_the_admin_authenticates_relayed_requests(
    admin_client, live_router, fake_vertex, service_account
):
    response = admin_client.post(
        add_url(), vertex_post(fake_vertex, secret_credentials_json=json.dumps(service_account))
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    vendor = Vendor.objects.get(name="gcp")
    assert vendor.credentials() == {"credentials_json": service_account}
    page = admin_client.get(reverse("admin:routing_vendor_change", args=[vendor.pk])).content.decode()
    assert key_material(service_account) not in page and "Currently set" in page

    model_create("test/gemini", deployments=[(vendor, "gemini-2.5-flash", 0, 1)], input_price=Decimal("1"))
    api_key, plaintext = api_key_create("tester")
    cast = Cast(live_router.url, plaintext, api_key, "test/gemini")
    answer = cast.chat(max_tokens=3)
    assert answer.status_code == 200, answer.text
    assert len(fake_vertex.token_requests) == 1
    assert fake_vertex.api_requests[-1].headers["authorization"].startswith("Bearer ya29.fake-")
    wait_settled()

    # A change that leaves the key blank keeps it; the relay still authenticates with it.
    change = reverse("admin:routing_vendor_change", args=[vendor.pk])
    assert admin_client.post(change, vertex_post(fake_vertex, idle_timeout="60")).status_code == 302
    vendor.refresh_from_db()
    assert vendor.credentials() == {"credentials_json": service_account} and vendor.idle_timeout == 60
    assert cast.chat(max_tokens=2).status_code == 200
    wait_settled()


@pytest.mark.parametrize(
    ("paste", "message"),
    [
        (lambda info: json.dumps(info)[:-20], "not valid JSON"),
        (lambda info: "-----BEGIN PRIVATE KEY-----\n" + key_material(info), "not valid JSON"),
        (lambda info: json.dumps({**info, "type": "authorized_user"}), "not a service-account key"),
        (lambda info: json.dumps([info]), "not a service-account key"),
        (lambda info: json.dumps({**info, "private_key": "x" + info["private_key"][40:]}), "not a readable PEM"),
    ],
)
@pytest.mark.django_db
def test_unusable_service_account_json_is_a_field_error_that_does_not_echo_it(admin_client, paste, message):
    info = service_account_key("https://oauth2.googleapis.com/token")
    with FakeVertex() as fake:
        response = admin_client.post(add_url(), vertex_post(fake, secret_credentials_json=paste(info)))
    [error] = field_errors(response, "secret_credentials_json")
    assert message in error
    assert key_material(info) not in response.content.decode()
    assert not Vendor.objects.exists()


@pytest.mark.django_db
def test_malformed_json_on_the_change_form_keeps_the_stored_key(admin_client, fake_vertex, service_account):
    options = {"project": fake_vertex.project, "location": fake_vertex.location}
    vendor = vendor_create("gcp", "vertex", fake_vertex.url, options, {"credentials_json": service_account})
    other = service_account_key(fake_vertex.url + "/token")
    change = reverse("admin:routing_vendor_change", args=[vendor.pk])
    response = admin_client.post(change, vertex_post(fake_vertex, secret_credentials_json=json.dumps(other)[:-1]))
    assert "not valid JSON" in field_errors(response, "secret_credentials_json")[0]
    assert key_material(other) not in response.content.decode()
    vendor.refresh_from_db()
    assert vendor.credentials() == {"credentials_json": service_account}


@pytest.mark.django_db
def test_allowlist_refuses_a_token_uri_elsewhere_in_the_admin(admin_client, settings, fake_vertex):
    settings.SIRAYA_VENDOR_HOSTS = ["127.0.0.1"]
    info = service_account_key("https://oauth2.attacker.example.net/token")
    response = admin_client.post(add_url(), vertex_post(fake_vertex, secret_credentials_json=json.dumps(info)))
    [error] = field_errors(response, "secret_credentials_json")
    assert "oauth2.attacker.example.net" in error and key_material(info) not in response.content.decode()
    assert not Vendor.objects.exists()


def test_token_request_to_a_host_outside_the_allowlist_is_never_sent(settings, fake_vertex, service_account):
    # Saved before the allowlist: the API host is listed, the key's token URI (the fake, on loopback) is not.
    settings.SIRAYA_VENDOR_HOSTS = ["us-central1-aiplatform.googleapis.com"]
    options = {"project": fake_vertex.project, "location": fake_vertex.location}
    config = VendorConfig(1, "gcp", "vertex", "", options, {"credentials_json": service_account}, 5.0, 5.0, 5.0)
    request = parse_chat_request(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))

    async def run() -> UpstreamError:
        try:
            await adapter_class("vertex")(config).complete(UpstreamCall(request, "gemini-2.5-flash", "gen-1"))
        except UpstreamError as error:
            return error
        finally:
            await http.close_loop_client()
        raise AssertionError("the request was sent")

    error = asyncio.run(run())
    assert (error.status, error.code) == (502, "vendor_host_refused")
    assert fake_vertex.requests == [] and "127.0.0.1" not in error.message
