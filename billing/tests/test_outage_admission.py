"""Admission against the journal through a database outage (``SIRAYA_ADMIT_DURING_OUTAGE=journal``).

A live router (``python -m siraya_site.serve``) on a database of the test's own (a throwaway
PostgreSQL cluster, or an SQLite file held locked past its busy timeout): requests during the
outage are admitted and answered, their records land once the database is back (insert,
checkpoints, settlement, in that order, each once), a key at its credit limit is refused with
the 402 on what this process last knew plus what it admitted since, and a router SIGKILLed with
such records in its journal has them settled from it at the next start.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from lib import tokens

from .outage_fixtures import TOKENS
from .own_database import OwnDatabase
from .test_database_outage import Received, ready, serve, wait_drained

MESSAGES = [{"role": "user", "content": "Tell me."}]
MAX_TOKENS = TOKENS  # each request's worst case is about what it costs (the fake answers this many)
STREAMS, CANCELLED = 6, 2


def ask(url: str, key: str, streamed: bool, cancel_after: int | None = None, answering: Any = None) -> Received:
    """One request; streamed, read to its end (or closed after ``cancel_after`` chunks); ``answering``
    (a semaphore) is released at the first chunk."""
    body = {"model": "test/fake", "stream": streamed, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as response:
        got = Received(response.status_code, response.headers.get("x-generation-id", ""))
        if not streamed or response.status_code != 200:
            answer = orjson.loads(response.read())
            got.errors = [answer["error"]] if "error" in answer else []
            got.content = "".join(c["message"]["content"] or "" for c in answer.get("choices", []))
            got.done = response.status_code == 200
            return got
        chunks = 0
        for line in response.iter_lines():
            if line == "data: [DONE]":
                got.done = True
            elif line.startswith("data: "):
                event = orjson.loads(line[6:])
                got.errors += [event["error"]] if "error" in event else []
                got.content += "".join(c.get("delta", {}).get("content") or "" for c in event.get("choices", []))
                chunks += 1
                if chunks == 1 and answering is not None:
                    answering.release()
                if cancel_after is not None and chunks >= cancel_after:
                    break
    return got


def started_streams(url: str, key: str, count: int, cancelled: int) -> list[Any]:
    """Start ``count`` streams (the first ``cancelled`` closed early); return once each is answering."""
    pool = ThreadPoolExecutor(count)
    answering = threading.Semaphore(0)
    futures = [pool.submit(ask, url, key, True, 15 if i < cancelled else None, answering) for i in range(count)]
    pool.shutdown(wait=False)
    for _ in range(count):
        assert answering.acquire(timeout=30), [f.result() for f in futures if f.done()]
    return futures


def tight_limit() -> tuple[Decimal, Decimal]:
    """(credit limit, one request's worst case): the limit fits two and a half worst cases."""
    from billing.cost import Prices
    from billing.credit import worst_case_cost

    prompt = tokens.count_messages(MESSAGES, "cl100k_base", None)
    worst = worst_case_cost(Prices(Decimal(1), Decimal(2), Decimal(0), Decimal(0), Decimal(0)), prompt, MAX_TOKENS)
    return worst * 5 / 2, worst


def tight_key(db: OwnDatabase, limit: Decimal) -> str:
    script = (
        "from decimal import Decimal\nfrom billing.services import api_key_create\n"
        f"print(api_key_create('tight', credit_limit=Decimal('{limit}'))[1])"
    )
    return db.manage("shell", "-c", script).strip().splitlines()[-1]


def journal_lines(folder: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(line) for path in sorted(folder.glob("writes-*.jsonl")) for line in path.read_bytes().splitlines()
    ]


def journal_settled(folder: Path, generation_ids: list[str]) -> list[dict[str, Any]]:
    """The journal's lines once it holds the settlement of each of ``generation_ids`` (a request's
    client may read its end a moment before its settlement is kept)."""
    deadline = time.monotonic() + 30
    while True:
        lines = journal_lines(folder)
        settled = {line.get("generation_id") for line in lines if line["kind"] == "settle"}
        if settled >= set(generation_ids):
            return lines
        assert time.monotonic() < deadline, f"settlements never reached the journal: {lines}"
        time.sleep(0.05)


def assert_in_order_once(lines: list[dict[str, Any]], generation_ids: list[str]) -> None:
    """Each request's writes in the journal: its admission first, its settlement last, once each."""
    for generation_id in generation_ids:
        kinds = [line["kind"] for line in lines if line.get("generation_id") == generation_id]
        assert kinds[0] == "admit" and kinds[-1] == "settle", (generation_id, kinds)
        assert kinds.count("admit") == kinds.count("settle") == 1, (generation_id, kinds)
        assert set(kinds[1:-1]) <= {"checkpoint"}, (generation_id, kinds)


def assert_books_balance(db: OwnDatabase, answered: list[Received], cancelled: list[Received]) -> None:
    """One settled record per request, billed for what it delivered; each key's spend the sum of its records."""
    rows = db.rows(
        "SELECT generation_id, status, completion_tokens, tokens_delivered, cost, checkpoint_at, reserved_cost "
        "FROM billing_usagerecord"
    )
    found = {row[0]: row[1:] for row in rows}
    assert not [g for g, r in found.items() if r[0] in ("in_progress", "interrupted")], found
    for got in answered:
        status, completion, delivered, cost, _, held = found[got.generation_id]
        assert (status, completion, delivered) == ("completed", TOKENS, TOKENS), found[got.generation_id]
        assert tokens.count_text(got.content, "cl100k_base") == TOKENS and cost > 0 and held == 0
    for got in cancelled:
        status, completion, delivered, _, _, held = found[got.generation_id]
        assert status == "cancelled" and completion == delivered and held == 0, found[got.generation_id]
        assert tokens.count_text(got.content, "cl100k_base") <= completion < TOKENS
    by_days = db.rows("SELECT api_key_id, SUM(cost), SUM(requests) FROM billing_keyusageday GROUP BY api_key_id")
    by_records = db.rows("SELECT api_key_id, SUM(cost), COUNT(*) FROM billing_usagerecord GROUP BY api_key_id")
    assert {k: (float(c), n) for k, c, n in by_days} == {k: (float(c), n) for k, c, n in by_records}


def settled_count(db: OwnDatabase, count: int) -> None:
    """Wait until ``count`` records are settled."""
    deadline = time.monotonic() + 30
    while db.rows("SELECT COUNT(*) FROM billing_usagerecord WHERE status <> 'in_progress'")[0][0] < count:
        assert time.monotonic() < deadline, f"fewer than {count} records settled"
        time.sleep(0.1)


def postgres_down(db: OwnDatabase) -> Callable[[], contextlib.AbstractContextManager[None]]:
    @contextlib.contextmanager
    def down() -> Iterator[None]:
        assert db.cluster is not None
        db.cluster.stop("fast")
        try:
            yield
        finally:
            db.cluster.start()

    return down


@pytest.mark.slow
@pytest.mark.parametrize("database", ["postgres", "sqlite"])
def test_requests_during_an_outage_are_admitted_against_the_journal_and_land_once(
    database: str, request: pytest.FixtureRequest, fake_vendor: Any, journal_dir: Path
) -> None:
    db: OwnDatabase = request.getfixturevalue("postgres" if database == "postgres" else "sqlite_file")
    key = db.prepare(fake_vendor.url + "/v1")
    limit, _ = tight_limit()
    tight = tight_key(db, limit)
    env = {
        "SIRAYA_ADMIT_DURING_OUTAGE": "journal",
        # Cached keys and routes expire during the outage: the entries last loaded serve then.
        "SIRAYA_KEY_CACHE_SECONDS": "1",
        "SIRAYA_ROUTE_CACHE_SECONDS": "1",
        "SIRAYA_SQLITE_BUSY_SECONDS": "0.5",
    }
    outage = postgres_down(db) if database == "postgres" else db.locked
    server = serve(db, journal_dir, f"journal-admission-{database}", **env)
    try:
        assert ask(server.url, key, False).status == 200
        assert ask(server.url, tight, False).status == 200  # this process now knows the tight key's spend
        with outage():
            futures = started_streams(server.url, key, STREAMS, CANCELLED)
            answered = [ask(server.url, key, False) for _ in range(2)]
            # The tight key's last known spend (the warm-up's hold) leaves room for one request
            # more, not two: the one admitted during the outage counts (its hold, then its cost).
            answered.append(ask(server.url, tight, False))
            over = ask(server.url, tight, False)
            streams = [f.result(timeout=60) for f in futures]
            state = ready(server)
            lines = journal_settled(journal_dir, [got.generation_id for got in [*answered, *streams]])
        first_back = ask(server.url, key, False)
        wait_drained(server)
    finally:
        server.stop()
    log = server.log()
    answered += streams[CANCELLED:]
    assert all(got.status == 200 and got.done and not got.errors for got in answered), answered
    assert all(got.status == 200 and not got.errors for got in streams[:CANCELLED]), streams
    assert over.status == 402 and over.errors[0]["code"] == "credit_limit_exceeded", over
    assert first_back.status == 200, first_back
    assert state["pending_writes"]["journal"] >= len(answered) + CANCELLED, state
    assert database == "sqlite" or state["checks"]["database"].startswith("unreachable"), state
    assert_in_order_once(lines, [got.generation_id for got in [*answered, *streams[:CANCELLED]]])
    assert "relay failed" not in log and "Exception in ASGI" not in log and "dropped a kept" not in log, log[-5000:]
    assert_books_balance(db, answered, streams[:CANCELLED])
    # Streams admitted against the journal checkpointed before they settled (a later checkpoint changes nothing).
    assert db.rows(
        "SELECT COUNT(*) FROM billing_usagerecord WHERE checkpoint_at IS NOT NULL AND generation_id IN ("
        + ", ".join(f"'{got.generation_id}'" for got in streams)
        + ")"
    )[0][0] == len(streams)
    refused = db.rows(
        f"SELECT status, http_status, error_code, cost FROM billing_usagerecord WHERE generation_id = '{over.generation_id}'"
    )
    assert refused == [("error", 402, "credit_limit_exceeded", refused[0][3])] and refused[0][3] == 0, refused


@pytest.mark.slow
def test_killed_router_settles_records_admitted_against_its_journal_at_the_next_start(
    postgres: OwnDatabase, fake_vendor: Any, journal_dir: Path
) -> None:
    key = postgres.prepare(fake_vendor.url + "/v1")
    env = {
        "SIRAYA_ADMIT_DURING_OUTAGE": "journal",
        "SIRAYA_KEY_CACHE_SECONDS": "300",
        "SIRAYA_ROUTE_CACHE_SECONDS": "300",
    }
    server = serve(postgres, journal_dir, "journal-admission-killed", **env)
    assert postgres.cluster is not None
    try:
        assert ask(server.url, key, False).status == 200
        settled_count(postgres, 1)  # the warm-up's settlement lands first (kept in memory, it dies with the process)
        postgres.cluster.stop("immediate")
        futures = started_streams(server.url, key, STREAMS, CANCELLED)
        streams = [f.result(timeout=60) for f in futures]
        lines = journal_settled(journal_dir, [got.generation_id for got in streams])
        server.stop(signal.SIGKILL)
    finally:
        server.stop()
        postgres.cluster.start()
    assert all(got.status == 200 and not got.errors for got in streams)
    assert all(got.done for got in streams[CANCELLED:]), "a stream was cut"
    assert_in_order_once(lines, [got.generation_id for got in streams])
    assert postgres.rows("SELECT COUNT(*) FROM billing_usagerecord")[0][0] == 1  # only the warm-up: none landed
    again = serve(postgres, journal_dir, "journal-admission-replayed", **env)
    try:
        settled_count(postgres, STREAMS + 1)
    finally:
        again.stop()
    assert all(p.stat().st_size == 0 for p in journal_dir.glob("writes-*.jsonl"))
    assert_books_balance(postgres, streams[CANCELLED:], streams[:CANCELLED])
    assert postgres.rows("SELECT COUNT(*) FROM billing_usagerecord")[0][0] == STREAMS + 1


def test_replaying_an_admission_and_its_settlement_twice_bills_once(db: Any, journal_dir: Path) -> None:
    """The journal's writes of a record admitted against it, applied twice (a replay that crashed
    half way, then ran again): one record, settled once, its key's day counted once."""
    from billing import journal, records
    from billing.models import KeyUsageDay, UsageRecord
    from billing.services import api_key_create
    from billing.settlement import Checkpoint, Outcome
    from routing.services import model_create, vendor_create

    vendor = vendor_create("v", "openai", "http://127.0.0.1:9/v1", credentials={"api_key": "sk-test"})
    model = model_create("m", deployments=[(vendor, "up", 0, 1)], input_price=Decimal(1), output_price=Decimal(2))
    key, _ = api_key_create("k")
    values = {
        "generation_id": "gen-journal-1",
        "api_key_id": key.pk,
        "model_id": model.pk,
        "model_name": "m",
        "status": "in_progress",
        "streamed": True,
        "input_price": Decimal(1),
        "output_price": Decimal(2),
        "cached_input_price": Decimal(0),
        "reasoning_price": Decimal(0),
        "request_price": Decimal(0),
        "created_at": records.now(),
        "instance_id": "dead-process",
        "reserved_cost": Decimal("0.5"),
    }
    outcome = Outcome(
        status="completed", vendor_prompt_tokens=10, vendor_completion_tokens=20, prompt_tokens=10, delivered_tokens=20
    )
    writes = [
        journal.admit_write(values),
        journal.checkpoint_write(0, Checkpoint(tokens_delivered=5), "gen-journal-1"),
        journal.settle_write(0, outcome, "gen-journal-1"),
    ]
    for _ in range(2):
        for write in writes:
            journal.apply(journal.parse_line(journal._line(write, 1)))  # as read back from the file
    record = UsageRecord.objects.get(generation_id="gen-journal-1")
    assert (record.status, record.completion_tokens, record.reserved_cost) == ("completed", 20, 0)
    assert record.cost == Decimal("0.00005") and record.checkpoint_at is not None
    day = KeyUsageDay.objects.get(api_key=key)
    assert (day.requests, day.cost) == (1, record.cost)


def test_last_known_spend_counts_admissions_until_a_read_takes_their_records_in() -> None:
    from billing import known_spend

    known_spend.forget()
    try:
        assert known_spend.figure(7) is None  # never read: nothing to check a limit against
        known_spend.noted(7, Decimal("1.00"), known_spend.tick())
        known_spend.admitted(7, "gen-a", Decimal("0.50"))
        known_spend.admitted(7, "gen-b", Decimal("0.25"))
        known_spend.admitted(8, "gen-other-key", Decimal("9"))
        assert known_spend.figure(7) == Decimal("1.75")
        known_spend.settled("gen-a", Decimal("0.01"))  # ended: its cost, not its hold
        assert known_spend.figure(7) == Decimal("1.26")
        read_before_landing = known_spend.tick()
        known_spend.landed("gen-a")
        known_spend.noted(7, Decimal("1.00"), read_before_landing)  # a read that may not have seen gen-a
        assert known_spend.figure(7) == Decimal("1.26")
        known_spend.noted(7, Decimal("1.01"), known_spend.tick())  # a read after gen-a landed: it is in there
        assert known_spend.figure(7) == Decimal("1.26")  # 1.01 read + gen-b's hold, still in the journal
        known_spend.withdrawn("gen-b")
        assert known_spend.figure(7) == Decimal("1.01")
        assert known_spend.figure(8) is None
    finally:
        known_spend.forget()
