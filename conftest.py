"""Fixtures shared by every app's tests: a live daphne router, fake vendors, the usual cast."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection

from billing import keys
from billing.models import ApiKey, UsageRecord, UsageStatus
from billing.services import api_key_create
from routing.models import Vendor
from routing.services import model_create, vendor_create

ROOT = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "artifacts"

# -- secrets created by this run, scanned for at the end (see ops/tests/secret_scan.py) -----
CREATED_SECRETS: set[str] = set()
SESSION_STARTED = time.time()


def _record_created_secrets() -> None:
    """Register every API key plaintext and vendor credential this test process creates."""
    generate, set_credentials = keys.generate, Vendor.set_credentials

    def generate_recorded() -> str:
        plaintext = generate()
        CREATED_SECRETS.add(plaintext)
        return plaintext

    def set_credentials_recorded(vendor: Vendor, values: dict[str, Any]) -> None:
        CREATED_SECRETS.update(v for v in values.values() if isinstance(v, str) and len(v) >= 8)
        set_credentials(vendor, values)

    keys.generate = generate_recorded
    Vendor.set_credentials = set_credentials_recorded  # type: ignore[method-assign,assignment]


_record_created_secrets()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any secret it created shows up in a live router's log or response."""
    from ops.tests.secret_scan import scan

    leaks = scan(ARTIFACTS, CREATED_SECRETS, since=SESSION_STARTED)
    if leaks:
        print("\nSECRET LEAK: created secrets found in logs or responses:\n  " + "\n  ".join(leaks))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dechunk(data: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body."""
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def database_url() -> str:
    """The URL of the test database, for a server process to use."""
    s = connection.settings_dict
    if s["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{s['NAME']}"
    auth = s.get("USER") or ""
    if s.get("PASSWORD"):
        auth += f":{s['PASSWORD']}"
    return f"postgres://{auth + '@' if auth else ''}{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int | None = None) -> None:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_server(
    env_overrides: dict[str, str] | None = None,
    *,
    name: str = "router",
    argv: list[str] | None = None,
    start_seconds: float = 90.0,
) -> LiveServer:
    """Start the router under daphne on a free loopback port; wait until it answers."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "siraya_site.settings",
        "DATABASE_URL": database_url(),
        "SIRAYA_KEY_CACHE_SECONDS": "0",
        # Tests recreate "test/fake" against a new fake vendor every time: no route caching.
        "SIRAYA_ROUTE_CACHE_SECONDS": "0",
        "SIRAYA_KEEPALIVE_SECONDS": "0.3",
        "SIRAYA_DEBUG_ENDPOINTS": "1",  # GET /debug/tasks, for leak checks
        # No rollups from the router: its refresh (several tables in one transaction) deadlocked
        # with a test's teardown TRUNCATE on PostgreSQL. Rollup tests call the job themselves.
        "SIRAYA_ROLLUP_SECONDS": "0",
        "PYTHONUNBUFFERED": "1",
        # Parallel test runs may share one Redis: each run writes under its own prefix.
        "SIRAYA_REDIS_PREFIX": f"siraya-test-{os.environ.get('SIRAYA_TEST_RUN', os.getpid())}:",
        **(env_overrides or {}),
    }
    log_path = ARTIFACTS / f"{name}-{port}.log"
    # Every response is copied here (ops.tests.tap) for the end-of-run secret scan.
    env.setdefault("SIRAYA_RESPONSE_TAP", str(ARTIFACTS / f"{name}-{port}.responses"))
    command = argv or [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "ops.tests.tap:application",
    ]
    command = [part.replace("{port}", str(port)) for part in command]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path, env)
    # Importing Django and the apps takes a few seconds, far more on a loaded machine.
    deadline = time.monotonic() + start_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"router exited early:\n{server.log()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"router did not start:\n{server.log()}")


@pytest.fixture(scope="session")
def live_router(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveServer]:
    """One daphne router process for the session, on the test database."""
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def server_factory(django_db_setup: None) -> Iterator[Any]:
    """Start extra router processes (own settings); they are stopped after the test."""
    started: list[LiveServer] = []

    def start(env: dict[str, str] | None = None, **kwargs: Any) -> LiveServer:
        server = start_server(env, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def fake_openai() -> Iterator[Any]:
    from fakevendors.openai import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake


@dataclass
class Cast:
    """The usual cast of a router test: a vendor, a model, a key, and the server they live on."""

    url: str
    key: str
    api_key: ApiKey
    model: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def chat(self, **body: Any) -> httpx.Response:
        body.setdefault("model", self.model)
        body.setdefault("messages", [{"role": "user", "content": "Say something."}])
        return httpx.post(self.url + "/v1/chat/completions", json=body, headers=self.headers(), timeout=30)

    def record(self, generation_id: str, timeout: float = 5.0) -> UsageRecord:
        """Return the usage record once it is settled (not ``in_progress``)."""
        deadline = time.monotonic() + timeout
        while True:
            record = UsageRecord.objects.filter(generation_id=generation_id).first()
            if record is not None and record.status != UsageStatus.IN_PROGRESS:
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"usage record {generation_id} not settled: {record and record.status}")
            time.sleep(0.01)


def make_cast(
    url: str, fake_url: str, *, kind: str = "openai", upstream: str = "fake-model", **model_fields: Any
) -> Cast:
    vendor = vendor_create("fake", kind, fake_url, credentials={"api_key": "sk-vendor-secret-for-tests"})
    model_fields.setdefault("input_price", Decimal("1"))
    model_fields.setdefault("output_price", Decimal("2"))
    model_create("test/fake", deployments=[(vendor, upstream, 0, 1)], **model_fields)
    api_key, plaintext = api_key_create("tester")
    return Cast(url, plaintext, api_key, "test/fake")


def wait_settled(timeout: float = 10.0) -> None:
    """Wait until the live server has settled every request (before the test database is flushed)."""
    deadline = time.monotonic() + timeout
    while UsageRecord.objects.filter(status=UsageStatus.IN_PROGRESS).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def cast(live_router: LiveServer, fake_openai: Any, transactional_db: None) -> Iterator[Cast]:
    """A live router with model ``test/fake`` served by the fake OpenAI vendor, and a key."""
    yield make_cast(live_router.url, fake_openai.url + "/v1")
    wait_settled()
