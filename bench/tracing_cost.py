"""What tracing costs: the router with tracing off, and on at 100% sampling, A/B in one session.

Starts the fake vendor, an OTLP/HTTP sink (``fakevendors.otlp``: it decodes and counts what it
gets, as a collector would) and one router per variant, each on its own fresh SQLite
database, all on the same ASGI server. Throughput rounds go to each variant in turn (the
order rotating each round), so the variants share the machine's state; the spread of each
variant's rounds is printed beside its median. Requests per second move with whatever else
the machine runs; the router's CPU time per request (user + system, from ``/proc``, over each
round, the exporter's thread included) moves far less, and is the figure to compare.

    python -m bench.tracing_cost                            # off and on
    python -m bench.tracing_cost --before /tmp/siraya-prev  # also the tree before tracing
                                                            # (git archive <commit> | tar -x -C ...)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import processes, workloads
from bench.limits import raise_open_files
from bench.loadgen import Target
from bench.prepare import MODELS


@dataclass
class Variant:
    name: str
    root: Path  # the source tree the router runs from
    env: dict[str, str]
    process: processes.Process | None = None
    key: str = ""

    def cpu_seconds(self) -> float:
        """User + system CPU time of the router process so far (all its threads)."""
        assert self.process is not None
        return self.process.cpu_seconds()

    def target(self) -> Target:
        assert self.process is not None
        return Target(
            self.name, "127.0.0.1", self.process.port, self.key, {m.removeprefix("bench/"): m for m in MODELS}
        )


def spawn(name: str, command: list[str], root: Path, env: dict[str, str], workdir: Path) -> processes.Process:
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    return processes.Process(name, process, log_path)


def wait_port(proc: processes.Process, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proc.log_path.read_text().splitlines():
            if line.startswith("PORT "):
                return int(line.split()[1])
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name} did not start:\n{proc.log()}")


def prepare(variant: Variant, vendor_url: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bench.prepare", vendor_url + "/v1"],
        cwd=variant.root,
        env=variant.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return str(json.loads(result.stdout.strip().splitlines()[-1])["key"])


def start_router(
    variant: Variant, server: str, workdir: Path, command: Callable[[int], list[str]] | None = None
) -> processes.Process:
    """Start ``variant``'s router on ``server`` (or as ``command(port)``) and wait until it answers."""
    port = processes.free_port()
    argv = command(port) if command else processes.server_command(server, processes.ROUTER_APP, port)
    proc = spawn(variant.name, argv, variant.root, variant.env, workdir)
    proc.port = port
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.process.poll() is None:
        if processes._healthy(port):
            return proc
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"router {variant.name} did not start:\n{proc.log()}")


async def measure(variants: list[Variant], args: argparse.Namespace) -> dict[str, Any]:
    targets = [v.target() for v in variants]
    by_name = {v.name: v for v in variants}
    await workloads.latency_interleaved(targets, "complete", 50, stream=False)  # warm-up
    await workloads.latency_interleaved(targets, "stream", 50, stream=True)
    out: dict[str, Any] = {}
    for workload, stream, key in (("complete", False, "requests_per_s"), ("stream", True, "requests_per_s")):
        rounds: dict[str, list[float]] = {t.name: [] for t in targets}
        cpu: dict[str, list[float]] = {t.name: [] for t in targets}
        for i in range(args.rounds):
            for target in targets[i % len(targets) :] + targets[: i % len(targets)]:
                before = by_name[target.name].cpu_seconds()
                result = await workloads.throughput(target, workload, args.concurrency, args.seconds, stream)
                spent = by_name[target.name].cpu_seconds() - before  # warm-up requests included
                rounds[target.name].append(result[key])
                cpu[target.name].append(spent / max(1, result["requests"] + result["errors"]) * 1e6)
        out[f"{workload}_rps"] = rounds
        out[f"{workload}_cpu_us"] = cpu
    out["latency_c1"] = await workloads.latency_interleaved(targets, "complete", args.latency, stream=False)
    out["ttft_c1"] = await workloads.latency_interleaved(targets, "stream", args.latency, stream=True)
    return out


def table(results: dict[str, Any], names: list[str]) -> str:
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key in (
        ("non-streamed req/s, c=32", "complete_rps"),
        ("streamed req/s (64 tokens), c=32", "stream_rps"),
    ):
        cells = []
        for name in names:
            runs = results[key][name]
            cells.append(f"{statistics.median(runs):.0f} ({min(runs):.0f}-{max(runs):.0f})")
        lines.append(f"| {label}: median (min-max) | " + " | ".join(cells) + " |")
    for label, key in (("non-streamed", "complete_cpu_us"), ("streamed", "stream_cpu_us")):
        cells = []
        for name in names:
            runs = results[key][name]
            cells.append(f"{statistics.median(runs):.0f} ({min(runs):.0f}-{max(runs):.0f})")
        lines.append(f"| {label}: router CPU us per request, median (min-max) | " + " | ".join(cells) + " |")
    for label, key in (("non-streamed p50 ms, c=1", "latency_c1"), ("time to first token p50 ms, c=1", "ttft_c1")):
        lines.append(f"| {label} | " + " | ".join(f"{results[key][n]['p50_ms']:.2f}" for n in names) + " |")
    if "off" in names and "on" in names:
        for label, key in (("non-streamed", "complete_cpu_us"), ("streamed", "stream_cpu_us")):
            off, on = statistics.median(results[key]["off"]), statistics.median(results[key]["on"])
            lines.append(
                f"\n{label}: tracing on costs {on - off:.0f} us of router CPU per request ({on / off - 1:+.0%})"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a source tree of the router before tracing, to compare with 'off'")
    parser.add_argument("--server", default="serve", choices=sorted(processes.SERVERS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=int, default=300, help="requests per variant at concurrency 1")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    raise_open_files()
    workdir = Path(tempfile.mkdtemp(prefix="siraya-tracing-bench-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    base.update(DJANGO_SETTINGS_MODULE="siraya_site.settings", LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    base.update(SIRAYA_KEY_CACHE_SECONDS="5", SIRAYA_VAR_DIR=str(workdir))
    started: list[processes.Process] = []
    try:
        vendor = processes.start_vendor(base, workdir)
        started.append(vendor)
        sink = spawn("otlp-sink", [sys.executable, "-m", "fakevendors.otlp"], processes.ROOT, base, workdir)
        started.append(sink)
        sink_url = f"http://127.0.0.1:{wait_port(sink)}"
        traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url, "OTEL_TRACES_SAMPLER": "always_on"}
        variants = [Variant("off", processes.ROOT, {}), Variant("on", processes.ROOT, traced)]
        if args.before is not None:
            variants.insert(0, Variant("before", args.before.resolve(), {}))
        for variant in variants:
            variant.env = {**base, **variant.env, "DATABASE_URL": f"sqlite:///{workdir / variant.name}.sqlite3"}
            variant.key = prepare(variant, vendor.url)
            variant.process = start_router(variant, args.server, workdir)
            started.append(variant.process)
        results = asyncio.run(measure(variants, args))
    finally:
        for proc in reversed(started):
            proc.stop()
    print(table(results, [v.name for v in variants]))
    print(sink.log().strip().splitlines()[-1])  # SPANS <n>: what the sink received
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
