"""``make bench``: the router against the fake vendor called directly and a bare relay, interleaved.

Starts, each in its own process: the fake OpenAI vendor (``bench.vendor``), the router on a fresh
migrated SQLite database (``bench.prepare``) and the bare relay (``bench.bare_relay``), both on
the same ASGI server. The load generator (``bench.loadgen``, raw asyncio sockets) runs here.
Everything is on loopback, bounded in count and time, and stops by itself. Prints one table
(Markdown, the one the README shows) and writes the same figures as JSON.

    python -m bench.run            # the full run (a few minutes on 2 cores)
    python -m bench.run --quick    # fewer samples, shorter phases
    python -m bench.run --server daphne --output bench/results/daphne.json
    python -m bench.run --workers 2 --database postgres   # 2 workers against 1 (bench.workers)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import processes, recorded_relay, workloads
from bench.limits import raise_open_files
from bench.loadgen import Target, percentile
from bench.prepare import MODELS
from bench.table import table

# The production command (``python -m siraya_site.serve``); measured unless told otherwise.
DEFAULT_SERVER = "serve"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Profile:
    latency_rounds: int  # non-streamed requests per target at concurrency 1
    ttft_rounds: int  # streamed requests per target at concurrency 1
    concurrency: int
    seconds: float  # per throughput round
    rounds: int  # throughput rounds per target (the median is kept)
    open_counts: tuple[int, ...]
    keepalive_s: float
    cancels: int  # per target
    cancel_concurrency: int
    fresh_router_per_open_phase: bool
    warmup_rounds: int = 30


PROFILES = {
    "full": Profile(2000, 1000, 32, 5.0, 3, (1000, 5000), 1.0, 200, 16, True),
    "quick": Profile(400, 200, 32, 2.0, 1, (1000,), 1.0, 50, 16, True),
    "smoke": Profile(10, 5, 4, 0.5, 1, (20,), 0.2, 3, 3, False, warmup_rounds=3),
}


def upstream_target(name: str, proc: processes.Process, key: str | None = None) -> Target:
    """The fake vendor itself, or a relay in front of it: asked for upstream model ids (the
    recorded relay also checks and records the router's ``key``)."""
    upstream = {model.removeprefix("bench/"): upstream for model, upstream in MODELS.items()}
    return Target(name, "127.0.0.1", proc.port, key, upstream)


def router_target(name: str, proc: processes.Process, key: str, api: str = "chat") -> Target:
    models = {model.removeprefix("bench/"): model for model in MODELS}
    return Target(name, "127.0.0.1", proc.port, key, models, api)


# The router's client APIs, each a target of its own on the same router: "router" is chat completions.
API_TARGETS = {"router": "chat", "router-messages": "messages", "router-responses": "responses"}


class Bench:
    def __init__(self, profile: Profile, server: str, workdir: Path) -> None:
        self.profile = profile
        self.server = server
        self.workdir = workdir
        self.database = workdir / "bench.sqlite3"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "siraya_site.settings",
            "DATABASE_URL": f"sqlite:///{self.database}",
            "SIRAYA_VAR_DIR": str(workdir),
            "SIRAYA_KEY_CACHE_SECONDS": "5",
            "SIRAYA_KEEPALIVE_SECONDS": str(profile.keepalive_s),
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        self.started: list[processes.Process] = []
        self.servers: dict[str, processes.Process] = {}  # by target name: whose CPU time a request costs

    def start(self, name: str, app: str, env: dict[str, str] | None = None) -> processes.Process:
        proc = processes.start_server(name, self.server, app, env or self.env, self.workdir)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()

    def run(self) -> dict[str, Any]:
        vendor = processes.start_vendor(self.env, self.workdir)
        self.started.append(vendor)
        try:
            key = processes.prepare_database(self.env, vendor.url)
            router = self.start("router", processes.ROUTER_APP)
            relay_env = {**self.env, "BENCH_UPSTREAM": vendor.url + "/v1"}
            bare = self.start("bare", processes.BARE_APP, relay_env)
            recorded = self.start("recorded", processes.RECORDED_APP, relay_env)
            self.servers = {"direct": vendor, "bare": bare, "recorded": recorded, "router": router}
            direct = upstream_target("direct", vendor)
            targets = [direct, upstream_target("bare", bare), router_target("router", router, key)]
            apis = [router_target(name, router, key, api) for name, api in API_TARGETS.items()]
            return asyncio.run(
                self.measure(targets, direct, router, key, upstream_target("recorded", recorded, key), apis)
            )
        finally:
            self.stop_all()

    async def measure(
        self,
        targets: list[Target],
        direct: Target,
        router: processes.Process,
        key: str,
        recorded: Target,
        apis: list[Target],
    ) -> dict[str, Any]:
        p = self.profile
        # The recorded relay is a floor for throughput only (see bench.recorded_relay).
        floors = [*targets[:2], recorded, *targets[2:]]
        cpu = {name: proc.cpu_seconds for name, proc in self.servers.items()}
        out: dict[str, Any] = {}
        step("warm-up")
        await workloads.latency_interleaved(targets, "complete", p.warmup_rounds, stream=False)
        await workloads.latency_interleaved(targets, "stream", p.warmup_rounds, stream=True)
        step(f"non-streaming latency, concurrency 1, {p.latency_rounds} requests per target")
        out["latency_c1"] = await workloads.latency_interleaved(targets, "complete", p.latency_rounds, stream=False)
        step(f"non-streaming throughput, concurrency {p.concurrency}")
        out["throughput"] = await workloads.throughput_interleaved(
            floors, "complete", p.concurrency, p.seconds, p.rounds, stream=False, cpu=cpu
        )
        step(f"streaming time to first token, concurrency 1, {p.ttft_rounds} streams per target")
        out["ttft_c1"] = await workloads.latency_interleaved(targets, "stream", p.ttft_rounds, stream=True)
        step(f"streaming chunks/s, 64-token answers, concurrency {p.concurrency}")
        out["streaming"] = await workloads.throughput_interleaved(
            floors, "stream", p.concurrency, p.seconds, p.rounds, stream=True, cpu=cpu
        )
        out["recorded_relay_records"] = self.recorded_records()
        out["apis"] = await self.client_apis(apis)
        step(f"cancellation, {p.cancels} per target at random points")
        cancels = await workloads.cancellations(targets, direct, p.cancels, p.cancel_concurrency)
        out["cancellation"] = self.cancellation_summary(cancels)
        out["open_streams"] = []
        for count in p.open_counts:
            step(f"{count} open streams")
            out["open_streams"].append(await self.open_streams(count, router, key))
        return out

    async def client_apis(self, apis: list[Target]) -> dict[str, Any]:
        """A Messages and a Responses stream beside chat completions, through the same router and
        recorded path, interleaved (so each API is measured under the same conditions as the others)."""
        p = self.profile
        step(f"client APIs: time to first token, concurrency 1, {p.ttft_rounds} streams per API")
        await workloads.latency_interleaved(apis, "stream", p.warmup_rounds, stream=True)
        ttft = await workloads.latency_interleaved(apis, "stream", p.ttft_rounds, stream=True)
        step(f"client APIs: relayed chunks/s, 64-token answers, concurrency {p.concurrency}")
        streaming = await workloads.throughput_interleaved(apis, "stream", p.concurrency, p.seconds, p.rounds, True)
        return {"ttft_c1": ttft, "streaming": streaming}

    async def open_streams(self, count: int, router: processes.Process, key: str) -> dict[str, Any]:
        proc = router
        if self.profile.fresh_router_per_open_phase:
            # A fresh process, so memory freed by earlier phases does not absorb the streams.
            proc = self.start(f"router-open-{count}", processes.ROUTER_APP)
        target = router_target("router", proc, key)
        await workloads.latency_interleaved([target], "stream", 5, stream=True)
        result = await workloads.open_streams(target, count, self.profile.keepalive_s, proc.rss_bytes)
        if proc is not router:
            proc.stop()
        return result

    def cancellation_summary(self, cancels: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for name, runs in cancels.items():
            times = [r["close_ms"] for r in runs if r["close_ms"] is not None]
            summary[name] = {
                "n": len(runs),
                "vendor_saw_close": len(times),
                "p50_ms": percentile(times, 50),
                "p99_ms": percentile(times, 99),
                "max_ms": max(times) if times else float("nan"),
            }
        router_runs = cancels.get("router", [])
        billed = self.billed_tokens([r["generation_id"] for r in router_runs])
        mismatches = [
            {
                "generation_id": r["generation_id"],
                "delivered": r["delivered_tokens"],
                "billed": billed.get(r["generation_id"]),
            }
            for r in router_runs
            if billed.get(r["generation_id"]) != ("cancelled", r["delivered_tokens"])
        ]
        summary["router"]["billed_equals_delivered"] = len(router_runs) - len(mismatches)
        summary["router"]["mismatches"] = mismatches[:20]
        return summary

    def recorded_records(self) -> dict[str, int]:
        """The usage records the recorded relay wrote: by status, and the tokens they bill."""
        with sqlite3.connect(self.database, timeout=30) as db:
            query = "SELECT status, count(*), sum(completion_tokens) FROM billing_usagerecord WHERE instance_id = ? GROUP BY status"
            rows = db.execute(query, (recorded_relay.INSTANCE,)).fetchall()
        summary = {status: count for status, count, _ in rows}
        summary["completion_tokens"] = sum(tokens or 0 for _, _, tokens in rows)
        return summary

    def billed_tokens(self, generation_ids: list[str], timeout: float = 30.0) -> dict[str, tuple[str, int]]:
        """(status, billed completion tokens) of each usage record, once none is in progress."""
        deadline = time.monotonic() + timeout
        rows: dict[str, tuple[str, int]] = {}
        while True:
            with sqlite3.connect(self.database, timeout=30) as db:
                marks = ",".join("?" * len(generation_ids))
                query = f"SELECT generation_id, status, completion_tokens FROM billing_usagerecord WHERE generation_id IN ({marks})"
                rows = {g: (s, c) for g, s, c in db.execute(query, generation_ids)}
            settled = len(rows) == len(generation_ids) and all(s != "in_progress" for s, _ in rows.values())
            if settled or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


def step(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# -- the table ---------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples and shorter phases")
    parser.add_argument("--smoke", action="store_true", help="a few seconds; checks that the harness works")
    parser.add_argument("--server", choices=processes.SERVERS, default=DEFAULT_SERVER)
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=1, help="N > 1: compare the router with N workers and 1")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite", help="with --workers N")
    args = parser.parse_args(argv)
    if args.workers > 1 and args.server != "serve":
        parser.error("--workers compares the production command's workers: it needs --server serve")
    if args.workers == 1 and args.database != "sqlite":
        parser.error("--database postgres goes with --workers N (N > 1)")
    return args


def measure_all(args: argparse.Namespace, profile: Profile, workdir: Path) -> dict[str, Any]:
    """Run the full comparison, or with ``--workers N`` the N-against-1 workers comparison."""
    bench = Bench(profile, args.server, workdir)
    if args.workers == 1:
        return bench.run()
    from bench import workers  # imports this module

    return workers.run(
        args.workers, args.database, bench.env, workdir, profile.concurrency, profile.seconds, profile.rounds
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    profile_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    profile = PROFILES[profile_name]
    random.seed(args.seed)
    raise_open_files()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    started = time.monotonic()
    # Other work on the machine skews every figure; the table says how busy it was.
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="siraya-bench-") as workdir:
        results = measure_all(args, profile, Path(workdir))
    results["meta"] = {
        **machine(),
        "server": args.server,
        "database": args.database,
        "workers": args.workers,
        "profile": profile_name,
        "settings": asdict(profile),
        "seconds": round(time.monotonic() - started, 1),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    if args.workers == 1:
        print(table(results))
    else:
        from bench import workers

        print(workers.table(results))
    print(f"\n(figures in {args.output}; the run took {results['meta']['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
