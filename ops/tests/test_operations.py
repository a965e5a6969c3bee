"""Concurrent-stream cap, readiness, metrics and structured logs, on live routers."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from billing.models import ApiKey
from conftest import Cast, wait_settled
from ops.tests.conftest import make_demo_cast
from routing.models import Vendor
from routing.tests.sse_client import RawStream

LONG = " ".join(f"w{i}" for i in range(60))  # the slow demo vendor takes 60 x 0.1 s to echo it


def slow_demo_cast(url: str, max_streams: int | None) -> Cast:
    cast = make_demo_cast(url)
    Vendor.objects.filter(name="demo-instant").update(options={"token_delay": 0.1})
    ApiKey.objects.filter(pk=cast.api_key.pk).update(max_concurrent_streams=max_streams)
    return cast


def open_stream(url: str, cast: Cast) -> RawStream:
    body = {"model": cast.model, "messages": [{"role": "user", "content": LONG}], "stream": True}
    stream = RawStream(url, cast.key, body)
    first = stream.next_data()  # admitted and streaming: its slot is held
    assert stream.status == 200 and isinstance(first, dict), (stream.status, first)
    return stream


def assert_refused(url: str, cast: Cast) -> None:
    body = {"model": cast.model, "messages": [{"role": "user", "content": "one more"}], "stream": True}
    response = httpx.post(url + "/v1/chat/completions", json=body, headers=cast.headers(), timeout=30)
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("concurrent_streams_exceeded", "rate_limit_error")
    record = cast.record(response.headers["x-generation-id"])
    assert (record.status, record.http_status, record.cost) == ("error", 429, 0)


def test_concurrent_stream_cap_refuses_the_extra_stream_and_frees_on_close(live_router, transactional_db):
    cast = slow_demo_cast(live_router.url, max_streams=2)
    streams = [open_stream(live_router.url, cast) for _ in range(2)]
    try:
        assert_refused(live_router.url, cast)
        # Not streamed: not capped.
        assert cast.chat(messages=[{"role": "user", "content": "plain"}]).status_code == 200
        streams.pop().close()  # the client goes away: the relay releases the slot in its finally
        deadline = time.monotonic() + 10
        while True:
            body = {"model": cast.model, "messages": [{"role": "user", "content": "again"}], "stream": True}
            response = httpx.post(
                live_router.url + "/v1/chat/completions", json=body, headers=cast.headers(), timeout=30
            )
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert response.status_code == 200, response.text
    finally:
        for stream in streams:
            stream.close()
        wait_settled()


def test_uncapped_key_streams_freely(live_router, transactional_db):
    cast = slow_demo_cast(live_router.url, max_streams=None)
    streams = [open_stream(live_router.url, cast) for _ in range(4)]
    for stream in streams:
        stream.close()
    wait_settled()


def test_readyz_reports_database_and_redis(live_router, transactional_db):
    response = httpx.get(live_router.url + "/readyz", timeout=10)
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert ("redis" in checks) == bool(live_router.env.get("REDIS_URL"))


def test_readyz_is_503_when_the_database_or_redis_is_unreachable(server_factory, transactional_db):
    server = server_factory({"REDIS_URL": "redis://127.0.0.1:1/0"}, name="unready")
    response = httpx.get(server.url + "/readyz", timeout=10)
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("unreachable")
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200  # alive, not ready


def test_metrics_are_off_unless_enabled(live_router):
    assert httpx.get(live_router.url + "/metrics", timeout=10).status_code == 404


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_tokens_cost_and_cancellations(server_factory, transactional_db):
    server = server_factory({"SIRAYA_METRICS_ENABLED": "1", "SIRAYA_METRICS_TOKEN": "scrape-token-123"}, name="metrics")
    scrape = {"Authorization": "Bearer scrape-token-123"}
    assert httpx.get(server.url + "/metrics", timeout=10).status_code == 401
    cast = make_demo_cast(server.url)
    for _ in range(3):
        assert cast.chat(messages=[{"role": "user", "content": "one two three"}]).status_code == 200
    Vendor.objects.filter(name="demo-instant").update(options={"token_delay": 0.2})
    body = {"model": cast.model, "messages": [{"role": "user", "content": LONG}], "stream": True}
    stream = RawStream(server.url, cast.key, body)
    stream.next_data()
    text = httpx.get(server.url + "/metrics", headers=scrape, timeout=10).text
    assert metric(text, "siraya_http_requests_total", endpoint="chat_completions", status="200") == 3
    assert metric(text, "siraya_generations_total", model=cast.model, status="completed") == 3
    assert metric(text, "siraya_tokens_total", model=cast.model, kind="completion") > 0
    assert metric(text, "siraya_cost_usd_total", model=cast.model) > 0
    assert metric(text, "siraya_streams_open") == 1
    assert metric(text, "siraya_upstream_first_token_seconds_count", vendor="demo-instant") == 3

    # The client goes away mid-stream: counted as a cancellation.
    stream.close()
    wait_settled()
    text = httpx.get(server.url + "/metrics", headers=scrape, timeout=10).text
    assert metric(text, "siraya_cancellations_total", reason="client_disconnected") >= 1
    assert metric(text, "siraya_streams_open") == 0


def test_log_lines_are_json_with_the_generation_id(server_factory, transactional_db):
    server = server_factory({"LOG_LEVEL": "INFO"}, name="jsonlogs")
    cast = make_demo_cast(server.url)
    response = cast.chat(messages=[{"role": "user", "content": "log me"}])
    generation_id = response.json()["id"]
    cast.record(generation_id)
    deadline = time.monotonic() + 5
    while generation_id not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [orjson.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [
        line for line in lines if line["logger"] == "siraya.access" and line.get("generation_id") == generation_id
    ]
    assert len(access) == 1
    assert (access[0]["method"], access[0]["path"], access[0]["status"]) == ("POST", "/v1/chat/completions", 200)
    assert {"time", "level", "message", "duration_ms"} <= set(access[0])
    assert cast.key not in server.log()


def test_unexpected_failure_is_logged_with_generation_id_and_answered_in_json(server_factory, transactional_db):
    """A vendor whose stored credentials cannot be decrypted: the relay fails, logs it, answers JSON."""
    server = server_factory(name="failure")
    cast = make_demo_cast(server.url)
    Vendor.objects.filter(name="demo-instant").update(credentials_encrypted="not-a-fernet-token")
    response = cast.chat(messages=[{"role": "user", "content": "boom"}])
    assert response.status_code >= 500
    assert set(response.json()["error"]) == {"message", "type", "code", "param"}
    generation_id = response.headers["x-generation-id"]
    deadline = time.monotonic() + 5
    while '"level":"ERROR"' not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    errors = [orjson.loads(line) for line in server.log().splitlines() if '"level":"ERROR"' in line]
    assert errors and errors[0]["generation_id"] == generation_id
    assert "exception" in errors[0]


@pytest.mark.parametrize("text", ["Authorization: Bearer sk-siraya-abc123", "key=sk-proj-" + "a" * 30])
def test_log_formatter_scrubs_secret_shapes(text):
    import logging

    from lib.logs import JsonFormatter

    record = logging.LogRecord("t", logging.INFO, __file__, 1, "got %s", (text,), None)
    line = JsonFormatter().format(record)
    assert "[redacted]" in line and "abc123" not in line and "a" * 30 not in line
