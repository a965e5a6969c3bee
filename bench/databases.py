"""``python -m bench.databases``: the router on SQLite against the router on PostgreSQL, interleaved.

Starts the fake vendor and three one-worker routers under the production command, each on a
fresh database of its own: SQLite, PostgreSQL, and PostgreSQL with Redis (the several-process
setup, as ``bench.workers`` prepares it). The PostgreSQL server is ``BENCH_POSTGRES_URL``
(default: the local one on loopback); it must run on this machine, since the CPU time of its
backends serving each router is read from /proc. Measured in the same run, in shuffled order:
non-streaming latency at concurrency 1, then requests/s at concurrency 32 in rounds, with the
CPU time per request of the router process and of the PostgreSQL backends (median of rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import processes, workers, workloads
from bench.limits import raise_open_files
from bench.loadgen import Target
from bench.run import PROFILES, Bench, router_target

SETUPS = ("sqlite", "postgres", "postgres+redis")


def cpu_readers(router: processes.Process, url: str, backends: list[float]) -> Callable[[], float]:
    """The router's CPU seconds (for ``workloads.throughput``); each call also appends its backends'."""

    def read() -> float:
        if not url.startswith("sqlite"):
            backends.append(workers.backend_cpu_seconds(url))
        return router.cpu_seconds()

    return read


async def measure(
    targets: list[Target], readers: dict[str, Callable[[], float]], backends: dict[str, list[float]], args: Any
) -> dict[str, Any]:
    await workloads.latency_interleaved(targets, "complete", 30, stream=False)
    latency = await workloads.latency_interleaved(targets, "complete", args.latency_rounds, stream=False)
    rounds: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    order = list(targets)
    for _ in range(args.rounds):
        random.shuffle(order)
        for target in order:
            backends[target.name].clear()
            result = await workloads.throughput(target, "complete", 32, args.seconds, False, readers[target.name])
            spent = backends[target.name]
            if len(spent) == 2 and result["requests"]:
                result["postgres_cpu_us_per_request"] = (spent[1] - spent[0]) / result["requests"] * 1e6
            rounds[target.name].append(result)
    return {"latency": latency, "rounds": rounds}


def run(args: Any, workdir: Path) -> dict[str, Any]:
    bench = Bench(PROFILES["quick"], "serve", workdir)
    with contextlib.ExitStack() as stack:
        vendor = processes.start_vendor(bench.env, workdir)
        stack.callback(vendor.stop)
        targets: list[Target] = []
        readers: dict[str, Callable[[], float]] = {}
        backends: dict[str, list[float]] = {}
        for setup in args.setups:
            kind = "sqlite" if setup == "sqlite" else "postgres"
            url = stack.enter_context(workers.fresh_database(kind, workdir, setup.replace("+", "_")))
            shared = stack.enter_context(workers.redis_prefix(kind)) if setup.endswith("redis") else {}
            env = {**bench.env, "DATABASE_URL": url, **shared}
            key = processes.prepare_database(env, vendor.url)
            router = processes.start_server(setup, "serve", processes.ROUTER_APP, env, workdir)
            stack.callback(router.stop)
            targets.append(router_target(setup, router, key))
            backends[setup] = []
            readers[setup] = cpu_readers(router, url, backends[setup])
        return asyncio.run(measure(targets, readers, backends, args))


def table(results: dict[str, Any], load: tuple[list[float], list[float]]) -> str:
    lines = [
        f"One-worker router, non-streaming; {os.cpu_count()} cores shared with the load generator, the fake "
        f"vendor and PostgreSQL; load average {load[0]} before, {load[1]} after\n",
        "| Database | c=1 p50 ms | c=32 requests/s (rounds) | router CPU µs/request | PostgreSQL CPU µs/request |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rounds in results["rounds"].items():

        def median(figure: str, rounds: list[dict[str, Any]] = rounds) -> float:
            values = [r[figure] for r in rounds if figure in r]
            return statistics.median(values) if values else float("nan")

        each = ", ".join(f"{r['requests_per_s']:.0f}" for r in rounds)
        lines.append(
            f"| {name} | {results['latency'][name]['p50_ms']:.2f} | {median('requests_per_s'):,.0f} ({each}) "
            f"| {median('cpu_us_per_request'):,.0f} | {median('postgres_cpu_us_per_request'):,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-rounds", type=int, default=300)
    parser.add_argument("--setups", type=lambda s: s.split(","), default=list(SETUPS), help=",".join(SETUPS))
    args = parser.parse_args(argv)
    if unknown := set(args.setups) - set(SETUPS):
        parser.error(f"unknown setups: {', '.join(sorted(unknown))}")
    raise_open_files()
    before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="siraya-databases-") as workdir:
        results = run(args, Path(workdir))
    print(table(results, (before, [round(x, 2) for x in os.getloadavg()])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
