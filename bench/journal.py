"""Time the database-outage path: ``python -m bench.journal [--writes N]``.

Prints, on this machine:

- the journal's write rate: settlements appended to a process's journal (one fsync'd line
  each, ``billing.journal.Journal.append``) per second, in a temporary folder on the same
  file system as ``var/`` (``--dir`` to measure another);
- the cost of keeping a settlement in memory (``pending.keep`` of an encoded ``Outcome``);
- what the healthy path pays for the outage guard: a settlement's future wrapped by
  ``billing.ledger._written`` (one timer and two callbacks) against the bare future, per write.

No server, no database writes (the pending-writes thread is not started): the figures isolate
the journal and the guard from the event loop and the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--dir", default="")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="siraya-journal-bench-", dir=args.dir or None)
    os.environ["SIRAYA_VAR_DIR"] = workdir
    os.environ["SIRAYA_JOURNAL_DIR"] = str(Path(workdir) / "journal")
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir}/bench.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "siraya_site.settings")
    import django

    django.setup()
    for batch in (1, 32):
        rate = journal_rate(args.writes, batch)
        print(f"journal: {rate:,.0f} settlements/s appended, {batch} per append and fsync")
    os.environ["SIRAYA_PENDING_WRITES_MEMORY"] = str(args.writes * 10)
    print(f"kept in memory: {memory_cost(args.writes * 10):.1f} us per settlement (on the event loop)")
    bare, guarded = guard_cost(args.writes * 25)
    print(f"healthy settlement future: {bare:.2f} us bare, {guarded:.2f} us with the outage guard")


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
    from billing import journal, ledger

    async def run(guarded: bool) -> float:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for first in range(0, writes, batch):
            inners = [loop.create_future() for _ in range(batch)]
            waited = [
                ledger._written(inner, lambda: journal.Write("settle", 0, {}, 0.0), lambda: 0) if guarded else inner
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


if __name__ == "__main__":
    main()
