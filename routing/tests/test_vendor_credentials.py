"""Vendor credentials go only where the operator meant: never to a new origin, never outside the host policy."""

from __future__ import annotations

import asyncio
import socket

import httpx
import orjson
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from billing.services import api_key_create
from fakevendors.azure import FakeAzure
from fakevendors.openai import FakeOpenAI
from lib.hosts import HostPolicy, url_host
from routing.dialects.chat.schema import parse_chat_request
from routing.errors import UpstreamError
from routing.models import Vendor
from routing.services import (
    VendorCredentialsRequired,
    VendorHostRefused,
    model_create,
    vendor_create,
    vendor_destinations_check,
    vendor_update,
)
from routing.tests.test_commands import manage
from routing.vendors import adapter_class, http
from routing.vendors.base import UpstreamCall, VendorConfig

SECRET = "sk-stored-vendor-secret-0123456789"
NEW_SECRET = "sk-newly-typed-secret-9876543210"
BASE = "https://api.example.com/v1"
INTERNAL = ["http://127.0.0.1:8080/v1", "http://10.1.2.3/v1", "http://169.254.169.254/v1", "http://[::1]:9/v1",
            "http://localhost:9/v1"]  # fmt: skip


def change_url(vendor: Vendor) -> str:
    return reverse("admin:routing_vendor_change", args=[vendor.pk])


def add_url(kind: str) -> str:
    return reverse("admin:routing_vendor_add") + f"?kind={kind}"


def post(base_url: str = BASE, **fields: str) -> dict[str, str]:
    return {"name": "acme", "base_url": base_url, "enabled": "on", **fields}


def field_errors(response, field: str) -> list[str]:
    assert response.status_code == 200, response.status_code
    return list(response.context["adminform"].form.errors.get(field, []))


@pytest.fixture
def acme(db) -> Vendor:
    return vendor_create("acme", "openai", BASE, credentials={"api_key": SECRET})


def stored(vendor: Vendor) -> tuple[str, dict]:
    vendor.refresh_from_db()
    return vendor.base_url, (vendor.credentials() if vendor.credentials_encrypted else {})


# -- credentials follow the origin, not the vendor ------------------------------------------


@pytest.mark.parametrize(
    "moved",
    [
        "http://api.example.com/v1",  # scheme
        "https://attacker.example.net/v1",  # host
        "https://api.example.com:8443/v1",  # port
    ],
)
def test_admin_refuses_a_new_origin_without_new_credentials(admin_client, acme, moved):
    response = admin_client.post(change_url(acme), post(moved))
    [error] = field_errors(response, "base_url")
    assert "Enter its credentials again" in error and "https://api.example.com" in error
    assert field_errors(response, "secret_api_key") == ["Enter the credentials for the new address."]
    assert SECRET not in response.content.decode()
    assert stored(acme) == (BASE, {"api_key": SECRET})


def test_admin_keeps_credentials_on_a_path_only_change(admin_client, acme):
    response = admin_client.post(change_url(acme), post("https://API.example.com:443/v2/"))
    assert response.status_code == 302
    assert stored(acme) == ("https://API.example.com:443/v2/", {"api_key": SECRET})


def test_admin_moves_the_vendor_with_the_credentials_typed_for_it(admin_client, acme):
    response = admin_client.post(change_url(acme), post("https://other.example.net/v1", secret_api_key=NEW_SECRET))
    assert response.status_code == 302
    assert stored(acme) == ("https://other.example.net/v1", {"api_key": NEW_SECRET})


def test_service_drops_nothing_and_saves_nothing_when_the_origin_moves(acme):
    acme.base_url = "https://attacker.example.net/v1"
    with pytest.raises(VendorCredentialsRequired) as raised:
        vendor_update(acme, options={}, credentials={})
    assert (raised.value.setting, raised.value.new_origin) == ("base_url", "https://attacker.example.net")
    assert stored(acme) == (BASE, {"api_key": SECRET})


def test_service_keeps_none_of_the_stored_secrets_when_the_origin_moves(db):
    keys = {"aws_access_key_id": "AKIAOLDOLDOLD", "aws_secret_access_key": "old-secret-key", "aws_session_token": "old"}
    vendor = vendor_create("aws", "bedrock", "", {"region": "us-east-1"}, keys)
    new_pair = {"aws_access_key_id": "AKIANEWNEWNEW", "aws_secret_access_key": "new-secret-key"}
    vendor_update(vendor, options={"region": "eu-west-1"}, credentials=new_pair)
    vendor.refresh_from_db()
    assert vendor.credentials() == new_pair  # the old session token did not come along


@pytest.mark.parametrize(
    ("kind", "base_url", "options", "credentials", "change", "field"),
    [
        ("vertex", "", {"project": "p", "location": "us-central1"}, {"access_token": "ya29.stored-token"},
         {"option_project": "p", "option_location": "europe-west4"}, "option_location"),
        ("bedrock", "", {"region": "us-east-1"}, {"api_key": "bedrock-stored-key"},
         {"option_region": "eu-west-1"}, "option_region"),
        ("azure", "https://res.openai.azure.com", {"entra_tenant_id": "t", "entra_client_id": "c"},
         {"entra_client_secret": "entra-stored-secret"},
         {"option_entra_tenant_id": "t", "option_entra_client_id": "c",
          "option_entra_authority": "https://login.attacker.example.net"}, "option_entra_authority"),
    ],
)  # fmt: skip
def test_options_that_move_requests_elsewhere_need_the_credentials_again(
    admin_client, kind, base_url, options, credentials, change, field
):
    vendor = vendor_create("acme", kind, base_url, options, credentials)
    response = admin_client.post(change_url(vendor), post(base_url, **change))
    [error] = field_errors(response, field)
    assert "Enter its credentials again" in error
    vendor.refresh_from_db()
    assert (vendor.options, vendor.credentials()) == (options, credentials)


def test_vertex_project_is_a_path_not_an_origin(admin_client):
    vendor = vendor_create("acme", "vertex", "", {"project": "p", "location": "us-central1"}, {"access_token": "tok"})
    response = admin_client.post(change_url(vendor), post("", option_project="q", option_location="us-central1"))
    assert response.status_code == 302
    vendor.refresh_from_db()
    assert (vendor.options["project"], vendor.credentials()) == ("q", {"access_token": "tok"})


def test_vendor_edit_command_refuses_a_new_host_in_one_line(acme):
    with pytest.raises(CommandError) as raised:
        call_command("vendor", "edit", "acme", "--base-url", "https://attacker.example.net/v1")
    message = str(raised.value)
    assert "enter its credentials again" in message and "\n" not in message and SECRET not in message
    assert stored(acme) == (BASE, {"api_key": SECRET})

    call_command("vendor", "edit", "acme", "--base-url", "https://api.example.com/v2")
    assert stored(acme) == ("https://api.example.com/v2", {"api_key": SECRET})
    call_command("vendor", "edit", "acme", "--base-url", "https://other.example.net/v1", "--api-key", NEW_SECRET)
    assert stored(acme) == ("https://other.example.net/v1", {"api_key": NEW_SECRET})


@pytest.mark.django_db(transaction=True)
def test_vendor_edit_from_the_command_line_exits_non_zero():
    vendor_create("acme", "openai", BASE, credentials={"api_key": SECRET})
    result = manage("vendor", "edit", "acme", "--base-url", "https://attacker.example.net/v1")
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("CommandError: the vendor's requests would go to https://attacker.example.net instead")
    assert SECRET not in result.stderr + result.stdout
    assert Vendor.objects.get(name="acme").base_url == BASE


# -- SIRAYA_VENDOR_HOSTS ----------------------------------------------------------------------


@pytest.fixture
def allowlist(settings):
    settings.SIRAYA_VENDOR_HOSTS = ["api.openai.com", "*.openai.azure.com", "bedrock-runtime.*.amazonaws.com"]
    return settings


def test_host_patterns_match_whole_labels():
    policy = HostPolicy(("api.openai.com", "*.openai.azure.com", "bedrock-runtime.*.amazonaws.com"))
    assert [policy.refusal(h) is None for h in ("api.openai.com", "res.openai.azure.com",
            "bedrock-runtime.us-east-1.amazonaws.com", "API.OpenAI.com.")] == [True] * 4  # fmt: skip
    for host in ("openai.com", "api.openai.com.evil.net", "a.b.openai.azure.com", "openai.azure.com",
                 "bedrock-runtime.amazonaws.com", "evilopenai.azure.com.attacker.net", "127.0.0.1"):  # fmt: skip
        assert policy.refusal(host) == f"host '{host}' is not in SIRAYA_VENDOR_HOSTS"


def test_allowlist_refuses_other_hosts_in_the_admin(admin_client, allowlist):
    response = admin_client.post(add_url("openai"), post("https://attacker.example.net/v1", secret_api_key=SECRET))
    [error] = field_errors(response, "base_url")
    assert "not in SIRAYA_VENDOR_HOSTS" in error
    assert not Vendor.objects.exists()
    response = admin_client.post(add_url("openai"), post("https://api.openai.com/v1", secret_api_key=SECRET))
    assert response.status_code == 302 and Vendor.objects.get().base_url == "https://api.openai.com/v1"


def test_allowlist_refuses_an_entra_authority_elsewhere(admin_client, allowlist):
    fields = {"option_entra_tenant_id": "t", "option_entra_client_id": "c", "secret_entra_client_secret": SECRET,
              "option_entra_authority": "https://login.attacker.example.net"}  # fmt: skip
    response = admin_client.post(add_url("azure"), post("https://res.openai.azure.com", **fields))
    [error] = field_errors(response, "option_entra_authority")
    assert "login.attacker.example.net" in error
    assert not Vendor.objects.exists()


def test_allowlist_refuses_default_hosts_it_does_not_list(db, settings):
    settings.SIRAYA_VENDOR_HOSTS = ["api.openai.com"]
    with pytest.raises(VendorHostRefused) as raised:
        vendor_create("aws", "bedrock", "", {"region": "us-east-1"}, {"api_key": "bedrock-key"})
    assert raised.value.setting == "region"
    with pytest.raises(VendorHostRefused) as raised:
        vendor_create("or", "onerouter", "", {}, {"api_key": "or-key"})
    assert raised.value.setting == "base_url" and "llm.onerouter.pro" in raised.value.reason


def test_allowlist_refuses_other_hosts_in_the_command(acme, allowlist):
    with pytest.raises(CommandError) as raised:
        call_command(
            "vendor", "add", "evil", "--kind", "openai", "--base-url", "https://x.example.net", "--api-key", "k"
        )
    assert "host 'x.example.net' is not in SIRAYA_VENDOR_HOSTS" in str(raised.value)
    with pytest.raises(CommandError) as raised:
        call_command("vendor", "edit", "acme", "--base-url", "https://attacker.example.net/v1", "--api-key", "k")
    assert "not in SIRAYA_VENDOR_HOSTS" in str(raised.value)
    assert not Vendor.objects.filter(name="evil").exists() and stored(acme) == (BASE, {"api_key": SECRET})
    call_command(
        "vendor", "add", "oai", "--kind", "openai", "--base-url", "https://api.openai.com/v1", "--api-key", "k"
    )
    assert Vendor.objects.filter(name="oai").exists()


@pytest.mark.django_db(transaction=True)
def test_allowlist_refuses_at_request_time_without_naming_the_host(server_factory):
    with FakeOpenAI() as fake:
        vendor = vendor_create("fake", "openai", fake.url + "/v1", credentials={"api_key": SECRET})  # saved before
        model_create("test/fake", deployments=[(vendor, "fake-model", 0, 1)])
        _, key = api_key_create("tester")
        router = server_factory({"SIRAYA_VENDOR_HOSTS": "api.openai.com"})
        for stream in (False, True):
            response = httpx.post(
                router.url + "/v1/chat/completions",
                json={"model": "test/fake", "messages": [{"role": "user", "content": "hi"}], "stream": stream},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            assert response.status_code == 502, response.text
            error = response.json()["error"]
            assert error["code"] == "vendor_host_refused"
            assert "127.0.0.1" not in response.text and str(fake.port) not in response.text
        assert fake.requests == []
        assert "is not in SIRAYA_VENDOR_HOSTS" in router.log() and SECRET not in router.log()


# -- internal addresses in production -------------------------------------------------------


@pytest.fixture
def production(settings):
    settings.SIRAYA_VENDOR_REFUSE_INTERNAL = True
    return settings


@pytest.mark.parametrize("url", INTERNAL)
def test_production_refuses_internal_addresses(db, production, url):
    with pytest.raises(VendorHostRefused) as raised:
        vendor_create("inside", "openai", url, credentials={"api_key": SECRET})
    assert "loopback, link-local or private address" in raised.value.reason
    assert not Vendor.objects.exists()


@pytest.mark.parametrize("url", INTERNAL)
def test_production_allows_internal_addresses_the_allowlist_names(db, production, url):
    production.SIRAYA_VENDOR_HOSTS = ["127.0.0.1", "10.0.0.0/8", "169.254.169.254", "[::1]", "localhost"]
    vendor_create("inside", "openai", url, credentials={"api_key": SECRET})
    assert Vendor.objects.get().base_url == url


def test_production_name_patterns_do_not_allow_internal_addresses(db, production):
    production.SIRAYA_VENDOR_HOSTS = ["*", "*.example.com"]
    for url in INTERNAL:
        with pytest.raises(VendorHostRefused):
            vendor_create("inside", "openai", url, credentials={"api_key": SECRET})


def test_production_refuses_a_name_that_resolves_to_an_internal_address(db, production):
    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    if not addresses or not HostPolicy.internal(name, addresses):
        pytest.skip(f"{name} does not resolve to an internal address here")
    # Checked the way every save checks (a single-label name is no valid URL for the model field).
    with pytest.raises(VendorHostRefused) as raised:
        vendor_destinations_check("openai", f"https://{name}/v1", {}, {"api_key": SECRET})
    assert "private address" in raised.value.reason
    production.SIRAYA_VENDOR_HOSTS = [name]
    vendor_destinations_check("openai", f"https://{name}/v1", {}, {"api_key": SECRET})


def test_production_refuses_internal_addresses_in_the_admin_and_command(admin_client, production):
    response = admin_client.post(add_url("openai"), post("http://169.254.169.254/latest", secret_api_key=SECRET))
    assert "private address" in field_errors(response, "base_url")[0]
    with pytest.raises(CommandError):
        call_command("vendor", "add", "meta", "--kind", "openai", "--base-url", "http://10.0.0.1", "--api-key", "k")
    assert not Vendor.objects.exists()


@pytest.mark.parametrize("url", INTERNAL)
def test_development_allows_internal_addresses_with_no_configuration(db, settings, url):
    assert (settings.SIRAYA_VENDOR_HOSTS, settings.SIRAYA_VENDOR_REFUSE_INTERNAL) == ([], False)
    assert vendor_create("local", "openai", url, credentials={"api_key": SECRET}).base_url == url


def _config(kind: str, base_url: str, options: dict, credentials: dict) -> VendorConfig:
    return VendorConfig(1, "inside", kind, base_url, options, credentials, 1.0, 5.0, 5.0)


def _complete(config: VendorConfig) -> UpstreamError:
    request = parse_chat_request(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))

    async def run() -> UpstreamError:
        try:
            await adapter_class(config.kind)(config).complete(UpstreamCall(request, "fake-model", "gen-1"))
        except UpstreamError as error:
            return error
        finally:
            await http.close_loop_client()
        raise AssertionError("the request was sent")

    return asyncio.run(run())


@pytest.mark.parametrize("url", INTERNAL)
def test_production_refuses_internal_addresses_before_connecting(production, url):
    error = _complete(_config("openai", url, {}, {"api_key": SECRET}))
    assert (error.status, error.code) == (502, "vendor_host_refused")
    assert url_host(url) not in error.message
    production.SIRAYA_VENDOR_HOSTS = ["127.0.0.1", "10.0.0.0/8", "169.254.169.254", "::1", "localhost"]
    assert _complete(_config("openai", url, {}, {"api_key": SECRET})).code != "vendor_host_refused"


def test_production_adapters_refuse_internal_hosts_saved_before(production):
    with FakeOpenAI() as fake:
        error = _complete(_config("openai", fake.url + "/v1", {}, {"api_key": SECRET}))
        assert (error.status, error.code, error.retryable) == (502, "vendor_host_refused", True)
        assert "127.0.0.1" not in error.message and fake.requests == []
    with FakeAzure() as fake:
        principal = {"entra_tenant_id": "t", "entra_client_id": "c", "entra_authority": fake.url}
        production.SIRAYA_VENDOR_HOSTS = ["res.openai.azure.com"]  # the resource, not the authority
        error = _complete(_config("azure", "https://res.openai.azure.com", principal, {"entra_client_secret": SECRET}))
        assert error.code == "vendor_host_refused" and fake.requests == []


def test_production_transport_refuses_a_name_resolving_to_an_internal_address(production, caplog):
    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    if "127.0.0.1" not in addresses:
        pytest.skip(f"{name} does not resolve to 127.0.0.1 here")
    with FakeOpenAI() as fake:
        # A name the save-time lookup may have seen elsewhere: the connection itself is refused.
        error = _complete(_config("openai", f"http://{name}:{fake.port}/v1", {}, {"api_key": SECRET}))
        assert (error.status, error.retryable) == (502, True)
        assert name not in error.message and fake.requests == []
    assert f"host '{name}' is a loopback, link-local or private address" in caplog.text
    production.SIRAYA_VENDOR_HOSTS = [name]  # named explicitly: allowed
    with FakeOpenAI(tokens=2) as fake:
        _complete_ok = _config("openai", f"http://{name}:{fake.port}/v1", {}, {"api_key": SECRET})
        request = parse_chat_request(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))

        async def run() -> None:
            try:
                await adapter_class("openai")(_complete_ok).complete(UpstreamCall(request, "fake-model", "gen-1"))
            finally:
                await http.close_loop_client()

        asyncio.run(run())
        assert len(fake.requests) == 1
