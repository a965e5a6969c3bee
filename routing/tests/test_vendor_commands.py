"""``manage.py vendor add`` for the OpenAI-compatible kinds, and ``vendor rotate-key``."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from lib import secretbox
from routing.models import Vendor
from routing.tests.test_commands import manage
from routing.vendors import adapter_class


@pytest.mark.parametrize(
    ("args", "options", "credentials"),
    [
        (
            ["--kind", "azure", "--base-url", "https://res.openai.azure.com", "--api-key", "az-secret"],
            {},
            {"api_key": "az-secret"},
        ),
        (
            ["--kind", "azure", "--base-url", "https://res.openai.azure.com/openai", "--api-key", "az-secret",
             "--api-version", "2025-04-01-preview", "--deployment", "gpt4o-prod", "--stream-usage", "on"],
            {"api_version": "2025-04-01-preview", "deployment": "gpt4o-prod", "stream_usage": "on"},
            {"api_key": "az-secret"},
        ),
        (
            ["--kind", "azure", "--base-url", "https://res.openai.azure.com", "--api-style", "v1",
             "--entra-token", "eyJ-token"],
            {"api_style": "v1"},
            {"entra_token": "eyJ-token"},
        ),
        (
            ["--kind", "azure", "--base-url", "https://res.openai.azure.com", "--entra-tenant-id", "t-1",
             "--entra-client-id", "c-2", "--entra-client-secret", "sp-secret"],
            {"entra_tenant_id": "t-1", "entra_client_id": "c-2"},
            {"entra_client_secret": "sp-secret"},
        ),
        (
            ["--kind", "byteplus", "--base-url", "https://ark.ap-southeast.bytepluses.com", "--api-key", "ark-secret"],
            {},
            {"api_key": "ark-secret"},
        ),
        (["--kind", "onerouter", "--api-key", "or-secret"], {}, {"api_key": "or-secret"}),
        (
            ["--kind", "onerouter", "--base-url", "https://llm.onerouter.pro/v1", "--api-key", "or-secret"],
            {},
            {"api_key": "or-secret"},
        ),
    ],
)  # fmt: skip
@pytest.mark.django_db
def test_vendor_add_accepts_each_kind_with_its_options(capsys, args, options, credentials):
    call_command("vendor", "add", "acme", *args)
    vendor = Vendor.objects.get(name="acme")
    assert vendor.options == options
    assert vendor.credentials() == credentials
    for secret in credentials.values():
        assert secret not in vendor.credentials_encrypted and secret not in capsys.readouterr().out
    adapter_class(vendor.kind).validate(vendor.base_url, vendor.options, vendor.credentials())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "azure", "--api-key", "k"], "--base-url is required for Azure"),
        (["--kind", "azure", "--base-url", "res.openai.azure.com", "--api-key", "k"], "--base-url must be an http(s) URL"),
        (["--kind", "azure", "--base-url", "https://r.openai.azure.com"], "exactly one of --api-key, --entra-token or --entra-client-secret"),
        (["--kind", "azure", "--base-url", "https://r.openai.azure.com", "--api-key", "k", "--entra-token", "t"],
         "exactly one of --api-key, --entra-token or --entra-client-secret"),
        (["--kind", "azure", "--base-url", "https://r.openai.azure.com", "--api-key", "k", "--api-style", "v2"],
         "--api-style must be 'deployment' or 'v1'"),
        (["--kind", "azure", "--base-url", "https://r.openai.azure.com", "--api-key", "k", "--api-style", "v1",
          "--api-version", "2024-10-21"], "apply to --api-style deployment only"),
        (["--kind", "azure", "--base-url", "https://r.openai.azure.com", "--api-key", "k", "--api-version", "latest"],
         "--api-version must look like"),
        (["--kind", "azure", "--base-url", "https://r.openai.azure.com", "--api-key", "k", "--stream-usage", "yes"],
         "--stream-usage must be one of"),
        (["--kind", "azure", "--base-url", "https://r.openai.azure.com", "--entra-client-secret", "s",
          "--entra-tenant-id", "t"], "--entra-client-secret needs --entra-tenant-id and --entra-client-id"),
        (["--kind", "azure", "--base-url", "https://r.openai.azure.com", "--api-key", "k", "--entra-client-id", "c"],
         "need --entra-client-secret"),
        (["--kind", "byteplus", "--api-key", "k"], "--base-url is required for BytePlus"),
        (["--kind", "byteplus", "--base-url", "https://ark.ap-southeast.bytepluses.com"], "--api-key is required"),
        (["--kind", "onerouter"], "--api-key is required for OneRouter"),
        (["--kind", "onerouter", "--api-key", "k", "--deployment", "x"], "--deployment does not apply to kind"),
    ],
)  # fmt: skip
@pytest.mark.django_db
def test_vendor_add_rejects_bad_options_in_one_line(args, message):
    with pytest.raises(CommandError) as raised:
        call_command("vendor", "add", "acme", *args)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not Vendor.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_vendor_add_from_the_command_line_gives_one_line_error_and_status():
    result = manage("vendor", "add", "az", "--kind", "azure", "--api-key", "az-secret-value")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "CommandError: --base-url is required for Azure (https://RESOURCE.openai.azure.com)"
    ]
    assert "az-secret-value" not in result.stderr + result.stdout
    ok = manage("vendor", "add", "az", "--kind", "azure", "--base-url", "https://r.openai.azure.com", "--api-key", "s")
    assert ok.returncode == 0, ok.stderr
    assert Vendor.objects.get(name="az").kind == "azure"


@pytest.mark.django_db
def test_rotate_key_re_encrypts_every_vendor_under_the_new_key(settings, capsys):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SIRAYA_ENCRYPTION_KEY = old
    call_command(
        "vendor", "add", "az", "--kind", "azure", "--base-url", "https://r.openai.azure.com", "--api-key", "az-1"
    )
    call_command("vendor", "add", "or", "--kind", "onerouter", "--api-key", "or-2")
    call_command("vendor", "add", "local", "--kind", "demo")  # no credentials: left alone
    before = dict(Vendor.objects.values_list("name", "credentials_encrypted"))

    settings.SIRAYA_ENCRYPTION_KEY = f"{new},{old}"  # new key first, old one still accepted
    call_command("vendor", "rotate-key")
    assert "credentials of 2 vendor(s) re-encrypted" in capsys.readouterr().out

    after = dict(Vendor.objects.values_list("name", "credentials_encrypted"))
    assert after["local"] == before["local"] == ""
    settings.SIRAYA_ENCRYPTION_KEY = new  # the old key is gone
    assert Vendor.objects.get(name="az").credentials() == {"api_key": "az-1"}
    assert Vendor.objects.get(name="or").credentials() == {"api_key": "or-2"}
    for name in ("az", "or"):
        assert after[name] != before[name]
        with pytest.raises(secretbox.SecretBoxError):
            secretbox.decrypt_json(old, after[name])


@pytest.mark.django_db
def test_rotate_key_without_the_old_key_fails_and_changes_nothing(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SIRAYA_ENCRYPTION_KEY = old
    call_command("vendor", "add", "or", "--kind", "onerouter", "--api-key", "or-2")
    before = Vendor.objects.get(name="or").credentials_encrypted
    settings.SIRAYA_ENCRYPTION_KEY = new
    with pytest.raises(CommandError, match="vendor 'or' cannot be decrypted"):
        call_command("vendor", "rotate-key")
    assert Vendor.objects.get(name="or").credentials_encrypted == before
