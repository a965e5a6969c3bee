"""The database going away under a live router: streams go on, no record is lost, a clear 503.

Each test gives the router (``python -m siraya_site.serve``, the production runner) a
database of its own: a throwaway PostgreSQL cluster (``initdb`` in a temporary folder, its
own port) restarted with a fast or an immediate shutdown, or an SQLite file held locked past
the busy timeout. Never the shared cluster, never the test database.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import LiveServer, start_server
from lib import tokens
from ops.tests.test_operations import metric

from .outage_fixtures import TOKENS
from .own_database import OwnDatabase

BOUND = 2.0  # SIRAYA_DB_UNAVAILABLE_SECONDS
SLACK = 2.0  # seconds of a loaded machine's delay on top of the bound
STREAMS, CANCELLED = 10, 3  # streams in flight across the outage; the first CANCELLED are cancelled


@dataclass
class Received:
    status: int
    generation_id: str
    content: str = ""
    done: bool = False  # ended with [DONE]
    errors: list[dict[str, Any]] = field(default_factory=list)  # in-band error chunks
    seconds: float = 0.0


def stream(url: str, key: str, cancel_after: int | None = None, answering: Any = None) -> Received:
    """Read one streamed answer; with ``cancel_after``, close the connection after that many chunks.
    ``answering`` (a semaphore) is released at the first chunk."""
    body = {"model": "test/fake", "stream": True, "messages": [{"role": "user", "content": "Tell me."}]}
    started = time.monotonic()
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as response:
        got = Received(response.status_code, response.headers.get("x-generation-id", ""))
        chunks = 0
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                got.done = True
                continue
            event = orjson.loads(line[6:])
            if "error" in event:
                got.errors.append(event["error"])
            for choice in event.get("choices", []):
                got.content += choice.get("delta", {}).get("content") or ""
            chunks += 1
            if chunks == 1 and answering is not None:
                answering.release()
            if cancel_after is not None and chunks >= cancel_after:
                break
    got.seconds = time.monotonic() - started
    return got


def chat(url: str, key: str) -> tuple[httpx.Response, float]:
    body = {"model": "test/fake", "messages": [{"role": "user", "content": "Tell me."}]}
    started = time.monotonic()
    response = httpx.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    return response, time.monotonic() - started


def serve(db: OwnDatabase, journal_dir: Path, name: str, **env: str) -> LiveServer:
    """The production runner on ``db``; keys and routes cached as in production, so that
    requests during the outage reach admission (the write that needs the database)."""
    settings = {
        "DATABASE_URL": db.url,
        "SIRAYA_JOURNAL_DIR": str(journal_dir),
        "SIRAYA_DB_UNAVAILABLE_SECONDS": str(BOUND),
        "SIRAYA_KEY_CACHE_SECONDS": "300",
        "SIRAYA_ROUTE_CACHE_SECONDS": "300",
        "SIRAYA_CHECKPOINT_SECONDS": "0.2",
        "SIRAYA_PENDING_RETRY_SECONDS": "0.2",
        "SIRAYA_METRICS_ENABLED": "1",
        "SIRAYA_LOG_FORMAT": "plain",
        **env,
    }
    return start_server(settings, name=name, argv=[sys.executable, "-m", "siraya_site.serve", "--port", "{port}"])


def ready(server: LiveServer) -> dict[str, Any]:
    answer = httpx.get(server.url + "/readyz", timeout=10)
    return {**answer.json(), "http": answer.status_code}


def wait_drained(server: LiveServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = ready(server)
        kept = state["pending_writes"]
        if state["http"] == 200 and kept["memory"] == 0 and kept["journal"] == 0:
            return
        assert time.monotonic() < deadline, f"kept writes never landed: {state}"
        time.sleep(0.25)


def start_streams(url: str, key: str) -> list[Any]:
    """Start the streams; return once each has received part of its answer."""
    pool = ThreadPoolExecutor(STREAMS)
    started = threading.Semaphore(0)
    futures = [pool.submit(stream, url, key, 15 if i < CANCELLED else None, started) for i in range(STREAMS)]
    pool.shutdown(wait=False)
    for _ in range(STREAMS):
        assert started.acquire(timeout=30), [f.result() for f in futures if f.done()]
    return futures


def assert_refused_in_time(response: httpx.Response, seconds: float) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.headers["retry-after"] == "2"
    assert seconds < BOUND + SLACK, seconds


def assert_books_balance(db: OwnDatabase, streams: list[Received], refused: list[str]) -> None:
    """One settled record per request, billed for what was delivered; the key's spend is their sum."""
    rows = db.rows(
        "SELECT generation_id, status, completion_tokens, tokens_delivered, cost, error_code FROM billing_usagerecord"
    )
    records = {row[0]: row[1:] for row in rows}
    assert len(records) == len(rows)
    assert not [g for g, r in records.items() if r[0] == "in_progress"], records
    for got in streams[CANCELLED:]:
        status, completion, delivered, cost, _ = records[got.generation_id]
        assert status == "completed"
        assert completion == tokens.count_text(got.content, "cl100k_base") == TOKENS
        assert cost > 0
    for got in streams[:CANCELLED]:
        status, completion, delivered, cost, _ = records[got.generation_id]
        assert status == "cancelled"
        # Billed for what the router handed to the socket: at least what the client read.
        assert completion == delivered
        assert tokens.count_text(got.content, "cl100k_base") <= completion < TOKENS
    for generation_id in refused:
        status, completion, _, cost, code = records[generation_id]
        assert (status, code, completion, float(cost)) == ("error", "database_unavailable", 0, 0.0)
    days = db.rows("SELECT SUM(cost), SUM(requests) FROM billing_keyusageday")[0]
    total = db.rows("SELECT SUM(cost), COUNT(*) FROM billing_usagerecord")[0]
    assert (float(days[0]), days[1]) == (float(total[0]), total[1])


@pytest.mark.slow
@pytest.mark.parametrize("shutdown", ["fast", "immediate"])
def test_postgres_restart_cuts_no_stream_loses_no_record_and_refuses_clearly(
    shutdown: str, postgres: OwnDatabase, fake_vendor: Any, journal_dir: Path
) -> None:
    key = postgres.prepare(fake_vendor.url + "/v1")
    # Two writes kept in memory, the rest in the journal: both paths are taken.
    server = serve(postgres, journal_dir, f"pg-outage-{shutdown}", SIRAYA_PENDING_WRITES_MEMORY="2")
    try:
        warm, _ = chat(server.url, key)
        assert warm.status_code == 200
        futures = start_streams(server.url, key)
        cluster(postgres).stop(shutdown)
        during = [chat(server.url, key) for _ in range(3)]
        streams = [future.result(timeout=60) for future in futures]
        state = ready(server)
        kept = state["pending_writes"]
        scraped = httpx.get(server.url + "/metrics", timeout=10).text
        cluster(postgres).start()
        after, _ = chat(server.url, key)  # the first request once the database is back
        wait_drained(server)
    finally:
        server.stop()
    log = server.log()
    for response, seconds in during:
        assert_refused_in_time(response, seconds)
    assert all(s.status == 200 and not s.errors for s in streams), [(s.status, s.errors) for s in streams]
    assert all(s.done for s in streams[CANCELLED:]), "a stream was cut"
    assert state["http"] == 503 and state["checks"]["database"].startswith("unreachable")
    assert kept["memory"] == 2 and kept["journal"] >= STREAMS - 2, kept
    assert metric(scraped, "siraya_pending_writes", where="journal") >= STREAMS - 2
    assert metric(scraped, "siraya_pending_write_age_seconds") > 0
    assert after.status_code == 200, after.text
    # No request failed in the router (writes failing in the writer are logged, and kept).
    assert "relay failed" not in log and "Exception in ASGI" not in log, log[-5000:]
    refused = [response.headers["x-generation-id"] for response, _ in during]
    assert_books_balance(postgres, streams, refused)


def cluster(db: OwnDatabase) -> Any:
    assert db.cluster is not None
    return db.cluster


@pytest.mark.slow
def test_sqlite_locked_past_busy_timeout_keeps_writes_and_refuses_clearly(
    sqlite_file: OwnDatabase, fake_vendor: Any, journal_dir: Path
) -> None:
    key = sqlite_file.prepare(fake_vendor.url + "/v1")
    server = serve(sqlite_file, journal_dir, "sqlite-locked", SIRAYA_SQLITE_BUSY_SECONDS="0.5")
    try:
        warm, _ = chat(server.url, key)
        assert warm.status_code == 200
        futures = start_streams(server.url, key)
        with sqlite_file.locked():  # a long VACUUM or a backup
            during = [chat(server.url, key) for _ in range(3)]
            streams = [future.result(timeout=60) for future in futures]
            kept = ready(server)["pending_writes"]
        after, _ = chat(server.url, key)
        wait_drained(server)
    finally:
        server.stop()
    for response, seconds in during:
        assert_refused_in_time(response, seconds)
    assert all(s.status == 200 and not s.errors for s in streams)
    assert all(s.done for s in streams[CANCELLED:]), "a stream was cut"
    assert kept["memory"] >= STREAMS, kept
    assert after.status_code == 200, after.text
    refused = [response.headers["x-generation-id"] for response, _ in during]
    assert_books_balance(sqlite_file, streams, refused)


@pytest.mark.slow
def test_killed_router_writes_are_replayed_from_its_journal_at_the_next_start(
    sqlite_file: OwnDatabase, fake_vendor: Any, journal_dir: Path
) -> None:
    key = sqlite_file.prepare(fake_vendor.url + "/v1")
    env = {"SIRAYA_SQLITE_BUSY_SECONDS": "0.5", "SIRAYA_PENDING_WRITES_MEMORY": "0"}  # every kept write on disk
    server = serve(sqlite_file, journal_dir, "journal-killed", **env)
    try:
        assert chat(server.url, key)[0].status_code == 200
        futures = start_streams(server.url, key)
        with sqlite_file.locked():
            streams = [future.result(timeout=60) for future in futures]
            assert ready(server)["pending_writes"]["journal"] >= STREAMS
            listed = sqlite_file.manage("usage", "journal", env={"SIRAYA_JOURNAL_DIR": str(journal_dir)})
            server.stop(signal.SIGKILL)
    finally:
        server.stop()
    head, *lines = listed.splitlines()
    assert "(live process)" in head, listed
    assert sum(line.split()[0] == "settle" for line in lines[:-1]) == STREAMS, listed  # one per stream
    assert sqlite_file.rows("SELECT COUNT(*) FROM billing_usagerecord WHERE status = 'in_progress'")[0][0] == STREAMS
    # The next process replays the dead one's journal before settling its records as interrupted.
    again = serve(sqlite_file, journal_dir, "journal-replayed", **env)
    try:
        deadline = time.monotonic() + 20
        while sqlite_file.rows("SELECT COUNT(*) FROM billing_usagerecord WHERE status = 'in_progress'")[0][0]:
            assert time.monotonic() < deadline, "the journal was not replayed"
            time.sleep(0.1)
    finally:
        again.stop()
    assert not list(journal_dir.glob("writes-*.jsonl")) or all(
        p.stat().st_size == 0 for p in journal_dir.glob("writes-*.jsonl")
    )
    assert_books_balance(sqlite_file, streams, [])
    assert not sqlite_file.rows("SELECT 1 FROM billing_usagerecord WHERE status = 'interrupted'")


def test_journal_lines_round_trip_and_replay_once(journal_dir: Path) -> None:
    """The journal's format, read back as written (a unit test of the file, no database)."""
    from billing import journal
    from billing.admission import Rejection
    from billing.cost import Prices
    from billing.settlement import Outcome
    from billing.terms import ModelTerms

    prices = Prices(*(Decimal(v) for v in ("1", "2", "0.5", "2", "0")))
    outcome = Outcome(
        status="completed",
        messages=[{"role": "user", "content": "x" * 1000}],
        prompt_tokens=7,
        delivered_text="hello",
        delivered_tokens=1,
        answered_by=ModelTerms(model_id=3, name="m", encoding="cl100k_base", max_output_tokens=9, prices=prices),
    )
    settle = journal.settle_write(42, outcome)
    reject = journal.reject_write(5, "gen-1", "m", Rejection(503, "database_unavailable", "down"))
    line = journal._line(settle, 1)
    assert b"x" * 100 not in line  # counted: the prompt's text is not kept
    back = journal.parse_line(line)
    assert (back.kind, back.record_id) == ("settle", 42)
    restored = journal._outcome(dict(back.data))
    assert restored.answered_by == outcome.answered_by and restored.prompt_tokens == 7
    assert journal.parse_line(journal._line(reject, 2)).data["code"] == "database_unavailable"


@pytest.mark.slow
def test_admission_landing_after_its_503_is_settled_as_refused_with_nothing_held(
    sqlite_file: OwnDatabase, fake_vendor: Any, journal_dir: Path
) -> None:
    """The database takes the admission after the bound (a lock released late): the client
    already has its 503, so the record it opened is settled at once, billed nothing."""
    key = sqlite_file.prepare(fake_vendor.url + "/v1")
    server = serve(sqlite_file, journal_dir, "late-admission", SIRAYA_SQLITE_BUSY_SECONDS="10")
    try:
        assert chat(server.url, key)[0].status_code == 200
        with sqlite_file.locked():
            response, seconds = chat(server.url, key)
            time.sleep(0.5)  # the admission still waits in the writer for the lock
        wait_drained(server)
    finally:
        server.stop()
    assert_refused_in_time(response, seconds)
    refused = response.headers["x-generation-id"]
    rows = sqlite_file.rows(
        "SELECT generation_id, status, error_code, cost, reserved_cost FROM billing_usagerecord ORDER BY id"
    )
    # One record for the refused request: the one its late admission opened, settled as refused
    # (its refusal record, kept first, found the generation id taken and changed nothing).
    assert len(rows) == 2, rows
    assert rows[1][:3] == (refused, "error", "database_unavailable"), rows
    assert float(rows[1][3]) == 0 and float(rows[1][4]) == 0, rows
