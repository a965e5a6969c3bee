"""Redis going away under a live router: limits fail closed, cooldowns fail open, nothing is left held.

The router's Redis here is a redis-server of the test's own on a free port (never the shared
one), stopped mid-test and started again on the same port. Two ways for it to go away: the
server is killed (connections refused at once), or a silent TCP server takes its port, accepts
connections and never answers (every call runs into ``SIRAYA_REDIS_TIMEOUT``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from billing.models import ApiKey, UsageRecord, UsageStatus
from billing.services import api_key_create
from conftest import LiveServer, free_port, make_cast
from ops.tests.test_operations import metric
from routing.services import model_create, vendor_create

from .external import unavailable
from .test_limits_live import MESSAGES, fire

REDIS_TIMEOUT = 1.0  # seconds; long enough that a loaded machine does not time out a live Redis


class RedisServer:
    """A throwaway redis-server on ``port``: no persistence, stopped and started at will."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or ""
        if not binary:
            unavailable("redis-server (the binary)")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [*command, "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while not self.answers():
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class SilentServer:
    """Accepts TCP connections on ``port`` and never answers: a Redis that hangs."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.held: list[socket.socket] = []
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stopped.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    def stop(self) -> None:
        self.stopped.set()
        time.sleep(0.2)  # the accept loop notices
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port()).start()
    yield server
    server.stop()


def make_keys() -> dict[str, str]:
    """Keys with a credit limit each (so admission holds), one per Redis feature under test."""
    _, capped = api_key_create("capped", credit_limit=Decimal("1"))
    ApiKey.objects.filter(name="capped").update(max_concurrent_streams=10)
    _, limited = api_key_create("limited", credit_limit=Decimal("1"), requests_per_minute=100)
    _, plain = api_key_create("plain", credit_limit=Decimal("1"))
    return {"capped": capped, "limited": limited, "plain": plain}


def make_cooling_model(fake_url: str) -> None:
    """``two-deployments``: a dead deployment first, so every request looks up and records cooldowns."""
    dead = vendor_create("dead", "openai", f"http://127.0.0.1:{free_port()}/v1", credentials={"api_key": "sk-dead-1"})
    live = vendor_create("live", "openai", fake_url, credentials={"api_key": "sk-live-1"})
    deployments = [(dead, "up-dead", 0, 1), (live, "fake-model", 1, 1)]
    model_create("two-deployments", deployments=deployments, input_price=Decimal(1), output_price=Decimal(1))


def load(server: LiveServer, keys: dict[str, str]) -> dict[str, list[httpx.Response]]:
    """A few concurrent requests of each kind: capped streams, rate-limited keys, a model with cooldowns."""
    targets = [(server.url, keys["capped"])] * 4 + [(server.url, keys["limited"])] * 3
    streams_and_limited = fire(targets, {"model": "test/fake", "messages": MESSAGES, "stream": True})
    cooled = fire([(server.url, keys["plain"])] * 3, {"model": "two-deployments", "messages": MESSAGES})
    return {"capped": streams_and_limited[:4], "limited": streams_and_limited[4:], "plain": cooled}


def scrape(server: LiveServer) -> str:
    return httpx.get(server.url + "/metrics", timeout=10).text


def wait_no_request_in_progress(timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while UsageRecord.objects.filter(status=UsageStatus.IN_PROGRESS).exists():
        assert time.monotonic() < deadline, "a usage record is still in progress"
        time.sleep(0.05)


def wait_ready(server: LiveServer, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(server.url + "/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the router did not become ready again"
        time.sleep(0.1)


def assert_refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": {
            "message": response.json()["error"]["message"],
            "type": "service_unavailable",
            "code": code,
            "param": None,
        }
    }
    assert "redis" not in response.text.lower() and "127.0.0.1" not in response.text
    assert response.headers["retry-after"] == "1"
    record = UsageRecord.objects.get(generation_id=response.headers["x-generation-id"])
    assert (record.status, record.http_status, record.error_code) == ("error", 503, code)
    assert (record.cost, record.reserved_cost, record.prompt_tokens, record.completion_tokens) == (0, 0, 0, 0)


@pytest.mark.slow
@pytest.mark.parametrize("outage", ["killed", "silent"])
def test_redis_outage_refuses_limits_serves_the_rest_settles_everything_and_recovers(
    outage: str, redis_server: RedisServer, server_factory: Any, fake_openai: Any, transactional_db: None
) -> None:
    fake_openai.scenario.tokens = 3
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
        "SIRAYA_REDIS_TIMEOUT": str(REDIS_TIMEOUT),
        "SIRAYA_METRICS_ENABLED": "1",
    }
    server = server_factory(env, name=f"redis-{outage}")
    make_cast(server.url, fake_openai.url + "/v1")
    make_cooling_model(fake_openai.url + "/v1")
    keys = make_keys()

    before = load(server, keys)
    assert [r.status_code for group in before.values() for r in group] == [200] * 10

    redis_server.stop()
    silent = SilentServer(redis_server.port) if outage == "silent" else None
    started = time.monotonic()
    during = load(server, keys)
    # Bounded waits: at most about four timeouts per request (two calls, each connect + answer),
    # two rounds of concurrent requests; generous for a loaded machine, far from a hang.
    assert time.monotonic() - started < 20 * REDIS_TIMEOUT
    for response in during["capped"]:
        assert_refused(response, "stream_limiter_unavailable")  # the cap fails closed
    for response in during["limited"]:
        assert_refused(response, "rate_limiter_unavailable")  # the rate limit fails closed
    for response in during["plain"]:
        assert response.status_code == 200, response.text  # cooldowns fail open
    ready = httpx.get(server.url + "/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("unreachable (")
    wait_no_request_in_progress()
    assert not UsageRecord.objects.filter(reserved_cost__gt=0).exists()
    metrics = scrape(server)
    assert metric(metrics, "siraya_redis_failures_total", feature="stream_slots", policy="closed") >= 4
    assert metric(metrics, "siraya_redis_failures_total", feature="rate_limit", policy="closed") >= 3
    assert metric(metrics, "siraya_redis_failures_total", feature="cooldowns", policy="open") >= 3
    assert metric(metrics, "siraya_redis_failures_total", feature="readiness", policy="closed") >= 1

    if silent is not None:
        silent.stop()
    redis_server.start()
    wait_ready(server)
    after = load(server, keys)
    assert [r.status_code for group in after.values() for r in group] == [200] * 10
    wait_no_request_in_progress()
    assert not UsageRecord.objects.filter(reserved_cost__gt=0).exists()
    # The refused requests never reached a vendor: only the served ones were billed.
    served = UsageRecord.objects.filter(status=UsageStatus.COMPLETED)
    assert served.count() == 23 and not served.filter(cost=0).exists()
    assert not UsageRecord.objects.filter(status=UsageStatus.ERROR).exclude(cost=0).exists()


def test_client_fails_each_feature_by_its_policy_within_the_timeout() -> None:
    """Closed features raise, open ones get their fallback; both are reported; neither waits long."""
    import asyncio

    from billing.shared_redis import COOLDOWNS, POLICIES, STREAM_SLOTS
    from lib.redisclient import Policy, RedisClient, RedisUnavailable

    silent = SilentServer(port := free_port())
    failures: list[tuple[str, Policy]] = []
    client = RedisClient(f"redis://127.0.0.1:{port}/0", 0.2, POLICIES, lambda f, p: failures.append((f, p)))

    async def scenario() -> tuple[Any, Any, float]:
        started = time.monotonic()
        fallback = await client.call(COOLDOWNS, lambda r: r.mget(["a"]), "fallback")
        try:
            await client.call(STREAM_SLOTS, lambda r: r.ping(), None)
        except RedisUnavailable as exc:
            refused = exc
        return fallback, refused, time.monotonic() - started

    try:
        fallback, refused, took = asyncio.run(scenario())
    finally:
        silent.stop()
    assert fallback == "fallback"
    assert (refused.feature, refused.reason) == (STREAM_SLOTS, "TimeoutError")
    assert failures == [(COOLDOWNS, Policy.OPEN), (STREAM_SLOTS, Policy.CLOSED)]
    assert took < 2 * 2 * 0.2 + 1  # two calls, each at most connect + answer, plus slack for a loaded machine
