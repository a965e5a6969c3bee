"""``python -m bench.run --workers N --database postgres``: the router with N workers against one.

Starts the fake vendor and two routers under the production command on one freshly migrated
database: one with ``--workers 1`` and one with ``--workers N``. With ``--database postgres``
the database is a new one on the PostgreSQL server at ``BENCH_POSTGRES_URL`` (default: the
local one on loopback, dropped at the end) and both routers share the Redis at ``REDIS_URL``
(default: the local one) under a prefix of their own, as a several-process deployment runs.
Non-streaming requests/s and relayed chunks/s (64-token streams) at concurrency 32 are
measured on both routers in interleaved rounds, in the same run, and printed with the
machine's core count and how the requests spread over the N workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import processes, workloads
from bench.loadgen import Target
from bench.run import router_target

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


@contextlib.contextmanager
def fresh_database(kind: str, workdir: Path, tag: str = "bench") -> Iterator[str]:
    """Yield the URL of a new, empty database (``tag`` tells several apart); drop it afterwards (PostgreSQL)."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / (tag + '.sqlite3')}"
        return
    import psycopg

    server = os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    name = f"siraya_{tag}_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def redis_prefix(kind: str) -> Iterator[dict[str, str]]:
    """Yield the Redis settings the routers share (none on SQLite); delete their keys afterwards."""
    if kind == "sqlite":
        yield {}
        return
    import redis

    url = os.environ.get("REDIS_URL", DEFAULT_REDIS)
    prefix = f"siraya-bench-{os.getpid()}:"
    client = redis.Redis.from_url(url)
    client.ping()  # fail now, not inside a router
    try:
        yield {"REDIS_URL": url, "SIRAYA_REDIS_PREFIX": prefix}
    finally:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()


def backend_cpu_seconds(database_url: str) -> float:
    """User + system CPU time so far of the PostgreSQL backends connected to the database (read
    from /proc: the server must run on this machine, as the default one on loopback does)."""
    import psycopg

    server = os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(server) as admin:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [name]).fetchall()
    return sum(processes.pid_cpu_seconds(pid) for (pid,) in rows)


def records_by_pid(database_url: str) -> dict[int, int]:
    """Usage records written so far, by the pid of the router process that admitted them."""
    query = (
        "SELECT i.pid, count(*) FROM billing_usagerecord u "
        "JOIN billing_routerinstance i ON u.instance_id = i.id GROUP BY i.pid"
    )
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=30) as db:
            return {pid: count for pid, count in db.execute(query)}
    import psycopg

    with psycopg.connect(database_url) as db:
        return {pid: count for pid, count in db.execute(query).fetchall()}


async def measure(targets: list[Target], concurrency: int, seconds: float, rounds: int) -> dict[str, Any]:
    await workloads.latency_interleaved(targets, "complete", 30, stream=False)
    await workloads.latency_interleaved(targets, "stream", 30, stream=True)
    complete = await workloads.throughput_interleaved(targets, "complete", concurrency, seconds, rounds, stream=False)
    stream = await workloads.throughput_interleaved(targets, "stream", concurrency, seconds, rounds, stream=True)
    return {"throughput": complete, "streaming": stream}


def run(
    workers: int, database: str, env: dict[str, str], workdir: Path, concurrency: int, seconds: float, rounds: int
) -> dict[str, Any]:
    """Measure the router with one worker and with ``workers`` on the same database, interleaved."""
    with fresh_database(database, workdir) as url, redis_prefix(database) as shared:
        env = {**env, "DATABASE_URL": url, **shared}
        started: list[processes.Process] = []
        try:
            vendor = processes.start_vendor(env, workdir)
            started.append(vendor)
            key = processes.prepare_database(env, vendor.url)
            names = {1: "1 worker", workers: f"{workers} workers"}
            routers = {}
            for count, name in names.items():
                routers[name] = processes.start_server(name, "serve", processes.ROUTER_APP, env, workdir, count)
                started.append(routers[name])
            targets = [router_target(name, proc, key) for name, proc in routers.items()]
            results = asyncio.run(measure(targets, concurrency, seconds, rounds))
            records = records_by_pid(url)
            many = routers[names[workers]]
            worker_pids = set(many.children())
            results["records_per_worker"] = sorted(
                (n for pid, n in records.items() if pid in worker_pids), reverse=True
            )
        finally:
            for proc in reversed(started):
                proc.stop()
    results["names"] = list(names.values())
    return results


def table(results: dict[str, Any]) -> str:
    meta = results["meta"]
    one, many = results["names"]
    database = "PostgreSQL + Redis" if meta["database"] == "postgres" else "SQLite"
    head = (
        f"`python -m siraya_site.serve`, {one} against {many}, {database} on loopback; "
        f"{meta['cpus']} cores ({meta['cpu_model']}) shared with the load generator and the fake vendor; "
        f"Python {meta['python']}; {meta['date']}; profile {meta['profile']}; load average (1/5/15 min) "
        f"{meta['load_average_before']} before, {meta['load_average_after']} after\n\n"
    )
    lines = [f"| Measure | {one} | {many} | {many} / {one} |", "|---|---:|---:|---:|"]
    c = meta["settings"]["concurrency"]
    for label, phase, figure in (
        (f"Non-streaming requests/s, c={c}", "throughput", "requests_per_s"),
        (f"Relayed chunks/s, 64-token streams, c={c}", "streaming", "chunks_per_s"),
    ):
        a, b = results[phase][one][figure], results[phase][many][figure]
        lines.append(f"| {label} | {a:,.0f} | {b:,.0f} | {b / a if a else float('nan'):.2f} |")
    spread = " / ".join(f"{n:,}" for n in results["records_per_worker"])
    return head + "\n".join(lines) + f"\n\nRequests per worker of the {many} router (usage records): {spread}"
