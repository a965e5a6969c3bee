"""The management commands scripts and operators drive the router with."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

import pytest
from django.core.management import call_command

from billing.keys import hash_key
from billing.models import ApiKey
from conftest import database_url
from routing.models import Deployment, RouterModel, Vendor


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py in a child process against the test database."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "siraya_site.settings", "DATABASE_URL": database_url()}
    return subprocess.run([sys.executable, "manage.py", *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.django_db
def test_vendor_model_key_commands(capsys):
    call_command(
        "vendor",
        "add",
        "acme",
        "--kind",
        "openai",
        "--base-url",
        "http://127.0.0.1:1/v1",
        "--api-key",
        "sk-acme-secret",
    )
    vendor = Vendor.objects.get(name="acme")
    assert vendor.credentials() == {"api_key": "sk-acme-secret"}
    assert "sk-acme-secret" not in vendor.credentials_encrypted
    call_command(
        "model", "add", "acme/gpt", "--vendor", "acme", "--upstream-model", "gpt-4o",
        "--input-price", "2.5", "--output-price", "10", "--context-length", "128000",
    )  # fmt: skip
    model = RouterModel.objects.get(name="acme/gpt")
    assert (model.input_price, model.output_price, model.context_length) == (Decimal("2.5"), Decimal("10"), 128000)
    assert Deployment.objects.get(model=model).upstream_model == "gpt-4o"
    call_command("key", "create", "ci", "--limit", "5")
    plaintext = capsys.readouterr().out.strip().splitlines()[-1]
    assert plaintext.startswith("sk-siraya-")
    api_key = ApiKey.objects.get(name="ci")
    assert api_key.key_hash == hash_key(plaintext) and api_key.credit_limit == Decimal("5")
    call_command("vendor", "list")
    call_command("model", "list")
    call_command("key", "list")
    out = capsys.readouterr().out
    assert "acme" in out and "acme/gpt" in out and api_key.prefix in out
    assert "sk-acme-secret" not in out and plaintext not in out
    call_command("key", "revoke", api_key.prefix)
    assert ApiKey.objects.get(name="ci").revoked_at is not None
    call_command("vendor", "disable", "acme")
    assert not Vendor.objects.get(name="acme").enabled


@pytest.mark.parametrize(
    "args",
    [
        ["vendor", "add", "x", "--kind", "martian"],
        ["vendor", "add", "x", "--kind", "openai"],
        ["model", "add", "m", "--vendor", "missing"],
        ["model", "add", "m", "--vendor", "demo", "--input-price", "cheap"],
        ["model", "add", "m", "--vendor", "demo", "--mode", "completion"],
        ["key", "create", "k", "--limit", "-3"],
        ["key", "revoke", "sk-siraya-nothing"],
        ["vendor"],
    ],
)
@pytest.mark.django_db(transaction=True)
def test_bad_arguments_give_one_line_and_non_zero_exit(args):
    result = manage(*args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.django_db
def test_model_add_takes_a_mode_and_list_shows_it(capsys):
    call_command("vendor", "add", "local", "--kind", "demo")
    call_command("model", "add", "vec", "--vendor", "local", "--input-price", "0.02", "--mode", "embedding")
    call_command("model", "add", "talk", "--vendor", "local")
    modes = dict(RouterModel.objects.values_list("name", "mode"))
    assert modes == {"vec": "embedding", "talk": "chat"}
    capsys.readouterr()
    call_command("model", "list")
    listed = {line.split("\t")[0]: line.split("\t")[1] for line in capsys.readouterr().out.splitlines()}
    assert listed == {"talk": "chat", "vec": "embedding"}


@pytest.mark.django_db
def test_demo_setup_adds_an_embedding_model_on_the_demo_vendor(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("demo_setup")
    call_command("demo_setup")  # again, as every make run does: nothing doubles
    model = RouterModel.objects.get(name="demo/embed")
    assert model.mode == "embedding"
    assert [(d.vendor.kind, d.upstream_model) for d in model.deployments.all()] == [("demo", "embed")]


@pytest.mark.django_db
def test_key_plaintext_is_stored_nowhere(capsys):
    call_command("key", "create", "secretive")
    plaintext = capsys.readouterr().out.strip().splitlines()[-1]
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM billing_apikey")
        rows = cursor.fetchall()
    assert rows and plaintext not in repr(rows)
    assert plaintext[len("sk-siraya-") :] not in repr(rows)


@pytest.mark.django_db
def test_demo_setup_is_idempotent(capsys):
    call_command("demo_setup")
    first = capsys.readouterr().out.strip().splitlines()[-1]
    call_command("demo_setup")
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert first == second and first.startswith("sk-siraya-")
    assert Vendor.objects.filter(kind="demo").count() == 1
    assert RouterModel.objects.filter(name="demo/echo").count() == 1
