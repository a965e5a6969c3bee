"""Time the database-outage path: ``python -m bench.journal [--writes N]``.

Prints, on this machine:

- the journal's write rate: settlements appended to a process's journal (one fsync'd line
  each, ``billing.journal.Journal.append``) per second, in a temporary folder on the same
  file system as ``var/`` (``--dir`` to measure another);
- the cost of keeping a settlement in memory (``pending.keep`` of an encoded ``Outcome``);
- what the healthy path pays for the outage guard: a settlement's future wrapped by
  ``billing.bounded.written`` (one timer and two callbacks) against the bare future, per write;
- admission against the journal (``SIRAYA_ADMIT_DURING_OUTAGE=journal``), on an SQLite file of
  its own held locked as an outage: admissions per second and each one's wait for its fsync'd
  line, one at a time and 32 at once (``billing.outage_admission.admit``: the credit check on the
  last known spend, the record's fields, the journal line), each settled likewise; then, the
  lock released, how fast the pending-writes thread lands them (an insert and a settlement
  each), checked against the records found.

No server. Only the last figure writes to a database (the bench's own file): the others
isolate the journal and the guard from the event loop and the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported once Django is set up
    from billing.selectors import KeyInfo
    from billing.terms import ModelTerms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--dir", default="")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="siraya-journal-bench-", dir=args.dir or None)
    os.environ["SIRAYA_VAR_DIR"] = workdir
    os.environ["SIRAYA_JOURNAL_DIR"] = str(Path(workdir) / "journal")
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir}/bench.sqlite3"
    os.environ["SIRAYA_SQLITE_BUSY_SECONDS"] = "0.05"  # the locked file: each retry fails fast
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "siraya_site.settings")
    import django

    django.setup()
    try:
        for batch in (1, 32):
            rate = journal_rate(args.writes, batch)
            print(f"journal: {rate:,.0f} settlements/s appended, {batch} per append and fsync")
        os.environ["SIRAYA_PENDING_WRITES_MEMORY"] = str(args.writes * 10)
        print(f"kept in memory: {memory_cost(args.writes * 10):.1f} us per settlement (on the event loop)")
        bare, guarded = guard_cost(args.writes * 25)
        print(f"healthy settlement future: {bare:.2f} us bare, {guarded:.2f} us with the outage guard")
        admissions_through_outage(Path(workdir) / "bench.sqlite3", min(args.writes, 1000))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def outcome() -> object:
    from billing.settlement import Outcome

    return Outcome(
        status="completed",
        http_status=200,
        finish_reason="stop",
        vendor_prompt_tokens=120,
        vendor_completion_tokens=400,
        prompt_tokens=120,
        delivered_tokens=400,
        first_token_ms=180,
        duration_ms=2400,
        deployment_id=1,
        vendor_id=1,
        vendor_name="openai-prod",
        upstream_model="gpt-4o-mini",
        attempts=[{"deployment_id": 1, "vendor": "openai-prod", "status": 200, "ms": 180}],
    )


def journal_rate(writes: int, batch: int) -> float:
    """Settlements per second appended to a journal, ``batch`` lines per append and fsync."""
    from billing import journal

    own = journal.Journal.own()
    done = outcome()
    started = time.perf_counter()
    for first in range(0, writes, batch):
        own.append([journal.settle_write(first + i, done) for i in range(batch)])  # type: ignore[arg-type]
    return writes / (time.perf_counter() - started)


def memory_cost(writes: int) -> float:
    """Microseconds per settlement kept in memory (``pending.keep``, on the event loop)."""
    from billing import journal
    from billing.pending import PendingWrites

    kept = PendingWrites()
    kept._ensure_threads = lambda: None  # type: ignore[method-assign]  # the keeping alone
    done = outcome()
    started = time.perf_counter()
    for record_id in range(writes):
        kept.keep(journal.settle_write(record_id, done))  # type: ignore[arg-type]
    return (time.perf_counter() - started) / writes * 1e6


def guard_cost(writes: int, batch: int = 32) -> tuple[float, float]:
    """Microseconds per settlement future, resolved in batches as the group commit resolves them
    (one wake-up of the loop per batch), awaited bare or through the outage guard."""
    from billing import bounded, journal

    async def run(guarded: bool) -> float:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for first in range(0, writes, batch):
            inners = [loop.create_future() for _ in range(batch)]
            waited = [
                bounded.written(inner, lambda: journal.Write("settle", 0, {}, 0.0), lambda: 0) if guarded else inner
                for inner in inners
            ]
            for number, inner in enumerate(inners):
                inner.set_result(first + number)
            for future in waited:
                await future
        return (time.perf_counter() - started) / writes * 1e6

    # The collector as the router sets it (``routing.relay.lifecycle._settle_heap``): with the
    # default thresholds a collection every few hundred futures dominated the figure.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    runs = [(asyncio.run(run(False)), asyncio.run(run(True))) for _ in range(5)]
    return min(bare for bare, _ in runs), min(guarded for _, guarded in runs)


def admissions_through_outage(path: Path, count: int) -> None:
    """Admit and settle ``count`` requests against the journal while ``path`` is locked, one at
    a time then 32 at once; release it and time the landing of them all."""
    import sqlite3
    from decimal import Decimal

    from django.core.management import call_command

    from billing import keys, known_spend
    from billing.pending import pending
    from billing.selectors import api_key_load
    from billing.services import api_key_create
    from routing.selectors import model_route
    from routing.services import model_create, vendor_create

    call_command("migrate", verbosity=0)
    vendor = vendor_create("bench", "openai", "http://127.0.0.1:9/v1", credentials={"api_key": "sk-bench"})
    model_create("bench/m", deployments=[(vendor, "m", 0, 1)], input_price=Decimal(1), output_price=Decimal(2))
    _, plaintext = api_key_create("bench", credit_limit=Decimal(1_000_000))
    key = api_key_load(keys.hash_key(plaintext))
    route = model_route("bench/m")
    assert key is not None and route is not None
    known_spend.noted(key.id, Decimal(0), known_spend.tick())  # as its last admission through the database would
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the outage: a long VACUUM or a backup
    try:
        for concurrency in (1, 32):
            rate, wait_ms = asyncio.run(_admit_all(key, route, count, concurrency))
            print(
                f"admission against the journal: {rate:,.0f}/s, {concurrency} at once,"
                f" {wait_ms:.2f} ms each until its line is fsync'd (settled likewise)"
            )
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    started = time.perf_counter()
    pending.wake()
    assert pending.drain(300), "the journal's writes did not land"
    seconds = time.perf_counter() - started
    from billing.models import UsageRecord

    landed = UsageRecord.objects.filter(status="completed").count()
    assert landed == 2 * count, (landed, 2 * count)
    print(f"landing once the database is back: {landed / seconds:,.0f} records/s (an insert and a settlement each)")


async def _admit_all(key: KeyInfo, route: ModelTerms, count: int, concurrency: int) -> tuple[float, float]:
    """Admissions per second and mean milliseconds each waited for its fsync'd line."""
    from billing import outage_admission
    from billing.credit import Ask

    waits: list[float] = []

    async def one(number: int) -> None:
        began = time.perf_counter()
        admission = await outage_admission.admit(
            key,
            f"gen-bench-{concurrency}-{number}",
            (route,),
            Ask(messages=[], prompt_tokens=120, max_tokens=400),
            True,
            None,
            "",
        )
        waits.append(time.perf_counter() - began)
        outage_admission.settle(admission, outcome())  # type: ignore[arg-type]

    started = time.perf_counter()
    for first in range(0, count, concurrency):
        await asyncio.gather(*(one(n) for n in range(first, min(first + concurrency, count))))
    return count / (time.perf_counter() - started), sum(waits) / len(waits) * 1000


if __name__ == "__main__":
    main()
