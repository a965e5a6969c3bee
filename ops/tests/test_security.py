"""Secrets stay secret; keys see only their own data; admin needs a login; production settings hold."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import httpx
import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.test import Client

from billing.services import api_key_create
from conftest import ROOT
from ops.tests.secret_scan import scan
from routing.models import Vendor
from routing.services import vendor_create


def test_secret_scan_finds_a_planted_secret(tmp_path):
    (tmp_path / "router-1.log").write_text('{"message": "boom sk-siraya-planted-secret"}\n')
    (tmp_path / "router-1.responses").write_bytes(b"--- POST /v1/x 200\n{}")
    (tmp_path / "notes.txt").write_text("sk-vendor-planted")  # not a log or response: not scanned
    leaks = scan(tmp_path, ["sk-siraya-planted-secret", "sk-vendor-planted", "absent-secret"])
    assert leaks == ["router-1.log: sk-siraya-pl..."]


@pytest.mark.django_db
def test_secrets_created_by_tests_are_registered_for_the_end_of_run_scan():
    from conftest import CREATED_SECRETS

    _, plaintext = api_key_create("registered")
    vendor_create("reg", "openai", "https://vendor.example/v1", credentials={"api_key": "sk-registered-vendor-1"})
    assert {plaintext, "sk-registered-vendor-1"} <= CREATED_SECRETS


@pytest.mark.django_db
def test_api_key_is_stored_only_as_its_hash():
    api_key, plaintext = api_key_create("hash-only")
    assert api_key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM billing_apikey WHERE id = %s", [api_key.pk])
        row = cursor.fetchone()
    assert not any(isinstance(value, str) and plaintext in value for value in row)
    assert api_key.prefix == plaintext[: len(api_key.prefix)] and len(api_key.prefix) < 20


@pytest.mark.django_db
def test_vendor_credentials_are_encrypted_at_rest():
    vendor = vendor_create(
        "enc", "openai", "https://vendor.example/v1", credentials={"api_key": "sk-enc-at-rest-123456"}
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM routing_vendor WHERE id = %s", [vendor.pk])
        row = cursor.fetchone()
    assert not any(isinstance(value, str) and "sk-enc-at-rest" in value for value in row)
    assert Vendor.objects.get(pk=vendor.pk).credentials() == {"api_key": "sk-enc-at-rest-123456"}


@pytest.fixture
def staff_client(django_user_model):
    user = django_user_model.objects.create_superuser("ops-admin", "ops@example.com", "pw-ops-admin-1")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_admin_never_shows_key_or_vendor_secrets(staff_client):
    api_key, plaintext = api_key_create("admin-view")
    vendor = vendor_create(
        "adm", "openai", "https://vendor.example/v1", credentials={"api_key": "sk-admin-view-987654"}
    )
    pages = [
        "/admin/billing/apikey/",
        f"/admin/billing/apikey/{api_key.pk}/change/",
        "/admin/routing/vendor/",
        f"/admin/routing/vendor/{vendor.pk}/change/",
    ]
    for page in pages:
        response = staff_client.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        assert plaintext not in html and "sk-admin-view-987654" not in html, page
        assert vendor.credentials_encrypted not in html, page


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["/admin/", "/admin/billing/usagerecord/", "/admin/billing/apikey/"])
def test_admin_and_usage_pages_require_login(client, page):
    response = client.get(page)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_csrf_is_enforced_on_the_admin_login():
    client = Client(enforce_csrf_checks=True)
    response = client.post("/admin/login/", {"username": "x", "password": "y"})
    assert response.status_code == 403


def test_one_key_cannot_read_another_keys_generation(cast):
    mine = cast.chat()
    assert mine.status_code == 200
    generation_id = mine.json()["id"]
    _, other = api_key_create("outsider")
    url = f"{cast.url}/v1/generation?id={generation_id}"
    theirs = httpx.get(url, headers={"Authorization": f"Bearer {other}"}, timeout=10)
    assert theirs.status_code == 404
    assert theirs.json()["error"]["code"] == "generation_not_found"
    assert "prompt_tokens" not in theirs.text
    own = httpx.get(url, headers=cast.headers(), timeout=10)
    assert own.status_code == 200 and own.json()["data"]["id"] == generation_id


def test_errors_never_echo_the_key_sent(live_router, transactional_db):
    wrong = "sk-siraya-" + "W" * 43
    for method, path in [("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/v1/generation?id=x")]:
        response = httpx.request(
            method, live_router.url + path, headers={"Authorization": f"Bearer {wrong}"}, timeout=10
        )
        assert response.status_code == 401
        assert "WWWW" not in response.text


def test_vendor_error_echoing_the_vendor_key_is_redacted(cast, fake_openai):
    fake_openai.scenario.status = 400
    fake_openai.scenario.error_body = {
        "error": {"message": "bad request with key sk-vendor-secret-for-tests", "code": "x"}
    }
    response = cast.chat()
    assert response.status_code == 400
    assert "sk-vendor-secret-for-tests" not in response.text and "bad request with key" not in response.text
    assert response.json()["error"]["code"] == "upstream_invalid_request"
    record = cast.record(response.headers["x-generation-id"])
    assert "sk-vendor-secret-for-tests" not in record.error_message
    assert "bad request with key [redacted]" in record.error_message  # the operator's copy, redacted


def production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SIRAYA_", "SECRET", "DEBUG"))}
    env.update(
        DJANGO_SETTINGS_MODULE="siraya_site.settings",
        SIRAYA_ENV="production",
        SECRET_KEY="throwaway-" + "x" * 60,
        SIRAYA_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="router.example.com",
        **extra,
    )
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_production_settings_pass_check_deploy_with_no_warnings():
    result = manage(production_env(), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("missing", ["SECRET_KEY", "SIRAYA_ENCRYPTION_KEY", "ALLOWED_HOSTS"])
def test_production_refuses_to_start_without_its_settings(missing):
    env = production_env()
    env.pop(missing)
    result = manage(env, "check")
    assert result.returncode != 0
    assert f"{missing} must be set" in result.stderr


def test_production_settings_values():
    code = (
        "from django.conf import settings as s; "
        "print(s.DEBUG, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0, "
        "s.SECURE_SSL_REDIRECT, s.ALLOWED_HOSTS)"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["False", "True", "True", "True", "True", "['router.example.com']"], result.stderr
