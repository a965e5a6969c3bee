"""Login throttling on both login pages: a username guessed at from one address is locked out for a while."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from conftest import ROOT
from ops.tests.test_security import production_env

LOGIN_URLS = ["/admin/login/", "/accounts/login/"]
LIMIT = 3
throttled = override_settings(
    AXES_ENABLED=True, AXES_FAILURE_LIMIT=LIMIT, SIRAYA_LOGIN_FAILURE_LIMIT=LIMIT, SIRAYA_LOGIN_COOLOFF_MINUTES=15
)


@pytest.fixture
def operator(db: None) -> User:
    return User.objects.create_user("operator", password="pw-right-one", is_staff=True, is_superuser=True)


def login(client: Client, url: str, password: str, forwarded_for: str | None = None) -> Any:
    extra = {} if forwarded_for is None else {"HTTP_X_FORWARDED_FOR": forwarded_for}
    return client.post(url, {"username": "operator", "password": password}, **extra)  # type: ignore[arg-type]


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@throttled
@pytest.mark.parametrize("url", LOGIN_URLS)
def test_failed_logins_lock_out_even_the_right_password(operator, url):
    client = Client()
    for _ in range(LIMIT - 1):
        assert login(client, url, "wrong").status_code == 200  # the form again, with its error
    locked = login(client, url, "wrong")
    assert locked.status_code == 429

    response = login(client, url, "pw-right-one")

    assert response.status_code == 429
    assert not logged_in(client)
    assert response["Retry-After"] == str(15 * 60)
    assert "Too many failed logins" in response.content.decode()
    assert "15 minutes" in response.content.decode()


@throttled
def test_the_lockout_holds_across_both_login_pages(operator):
    client = Client()
    for _ in range(LIMIT):
        login(client, "/accounts/login/", "wrong")
    assert login(client, "/admin/login/", "pw-right-one").status_code == 429


@throttled
def test_lockout_is_per_username_and_address(operator):
    guesser = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(LIMIT):
        login(guesser, "/admin/login/", "wrong")
    assert login(guesser, "/admin/login/", "pw-right-one").status_code == 429

    # The operator, from their own address, is not locked out by someone else's guessing.
    operator_client = Client(REMOTE_ADDR="198.51.100.7")
    assert login(operator_client, "/admin/login/", "pw-right-one").status_code == 302
    assert logged_in(operator_client)


@throttled
def test_a_successful_login_resets_the_count(operator):
    client = Client()
    for _ in range(LIMIT - 1):
        login(client, "/accounts/login/", "wrong")
    assert login(client, "/accounts/login/", "pw-right-one").status_code == 302
    client.logout()
    for _ in range(LIMIT - 1):
        login(client, "/accounts/login/", "wrong")
    assert login(client, "/accounts/login/", "pw-right-one").status_code == 302


@throttled
def test_x_forwarded_for_is_ignored_unless_proxies_are_configured(operator):
    client = Client(REMOTE_ADDR="203.0.113.9")
    for i in range(LIMIT):
        login(client, "/admin/login/", "wrong", forwarded_for=f"192.0.2.{i}")
    # A fresh forged address per attempt gains nothing: the socket's peer is the client.
    assert login(client, "/admin/login/", "pw-right-one", forwarded_for="192.0.2.200").status_code == 429


@throttled
@override_settings(SIRAYA_TRUSTED_PROXY_COUNT=1)
def test_behind_a_proxy_the_address_it_appended_is_the_client(operator):
    proxy = "10.0.0.2"
    guesser = Client(REMOTE_ADDR=proxy)
    for _ in range(LIMIT):
        # Whatever the guesser puts in the header, the proxy appends the address it saw.
        login(guesser, "/admin/login/", "wrong", forwarded_for="198.51.100.7, 203.0.113.9")
    assert login(guesser, "/admin/login/", "pw-right-one", forwarded_for="203.0.113.9").status_code == 429

    operator_client = Client(REMOTE_ADDR=proxy)
    assert login(operator_client, "/admin/login/", "pw-right-one", forwarded_for="198.51.100.7").status_code == 302
    assert logged_in(operator_client)


def test_throttling_is_on_by_default_in_production_and_configurable():
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.AXES_ENABLED, s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME.total_seconds(), s.AXES_LOCKOUT_PARAMETERS)"
    )

    def settings_with(**env: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=production_env(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert settings_with() == "True 5 900.0 [['username', 'ip_address']]"
    limits = {"SIRAYA_LOGIN_FAILURE_LIMIT": "8", "SIRAYA_LOGIN_COOLOFF_MINUTES": "2"}
    assert settings_with(**limits) == "True 8 120.0 [['username', 'ip_address']]"
    assert settings_with(SIRAYA_LOGIN_FAILURE_LIMIT="0").startswith("False")


def _post_login(http: httpx.Client, url: str, password: str) -> httpx.Response:
    page = http.get(url)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    form = {"csrfmiddlewaretoken": token.group(1), "username": "operator", "password": password}
    return http.post(url, data=form, headers={"Referer": str(page.url)})


@pytest.mark.slow
def test_lockout_on_a_live_router(server_factory, transactional_db):
    """The same over ASGI under daphne (axes' async middleware path), with the production default limit."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    user = User.objects.create(username="operator", is_staff=True, is_superuser=True)
    user.password = PBKDF2PasswordHasher().encode("pw-right-one", "livesalt", iterations=1000)  # the server's hasher
    user.save()
    server = server_factory({"SIRAYA_LOGIN_FAILURE_LIMIT": "2", "SIRAYA_LOGIN_COOLOFF_MINUTES": "1"})
    with httpx.Client(base_url=server.url, timeout=30) as operator_browser:
        # A real login through axes' backend (it needs the request; Django's LoginView passes it).
        welcome = _post_login(operator_browser, "/admin/login/?next=/admin/", "pw-right-one")
        assert welcome.status_code == 302 and welcome.headers["location"] == "/admin/"
        assert operator_browser.get("/admin/").status_code == 200
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert _post_login(http, "/accounts/login/", "wrong").status_code == 200
        assert _post_login(http, "/accounts/login/", "wrong").status_code == 429
        locked = _post_login(http, "/admin/login/", "pw-right-one")
        assert locked.status_code == 429 and locked.headers["retry-after"] == "60"
        assert "Too many failed logins" in locked.text and "sessionid" not in http.cookies
