"""Where an open stream's memory goes: tracemalloc's account of N open streams, per source line.

Starts the fake vendor and, for each variant, a router on its own fresh SQLite database under
``python -X tracemalloc``; opens N slow streams to it (``workloads.open_streams``: every one
must get its keepalive) and has the router snapshot its heap before the first stream and once
all are open (a signal each). Prints, per variant, RSS per stream (tracemalloc's own overhead
included, so larger than ``make bench``'s figure) and the Python allocations per stream,
grouped by file and by line, largest first; with two variants, the lines that differ.

    python -m bench.memory                                 # this tree on the production command
    python -m bench.memory --variant before=/tmp/siraya-prev:uvicorn --variant now=.:uvicorn
                                                           # an older tree (git archive <commit> | tar -x -C ...)
                                                           # against this one, both on plain uvicorn
    python -m bench.memory --frames 0 --rounds 3 --variant ...   # RSS alone, no tracemalloc, in turn
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import processes, workloads
from bench.limits import raise_open_files
from bench.tracing_cost import Variant, prepare, start_router

# Run in the router process: snapshot the heap to $MEMTRACE_DIR/<signal>.snap on SIGUSR1 and SIGUSR2,
# then run the module named by argv[1] as ``python -m`` would.
_WRAPPER = """
import os, runpy, signal, sys, tracemalloc
def snapshot(signum, frame):
    path = os.path.join(os.environ["MEMTRACE_DIR"], f"{signum}.snap")
    tracemalloc.take_snapshot().dump(path + ".part")
    os.replace(path + ".part", path)
signal.signal(signal.SIGUSR1, snapshot)
signal.signal(signal.SIGUSR2, snapshot)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
_UVICORN = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--loop", "uvloop", "--http", "httptools"]
_UVICORN += ["--lifespan", "on", "--no-access-log", "--log-level", "warning", "--backlog", "8192"]
_SERVE = ["siraya_site.serve", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
_SERVE += ["--backlog", "8192"]


def command(server: str, port: int, frames: int) -> list[str]:
    args = _SERVE if server == "serve" else [*_UVICORN, processes.ROUTER_APP]
    return [
        sys.executable,
        "-X",
        f"tracemalloc={frames}",
        "-c",
        _WRAPPER,
        *(a.replace("{port}", str(port)) for a in args),
    ]


def snapshotter(proc: processes.Process, folder: Path, traced: bool) -> Callable[[], int]:
    """The ``rss`` callback of ``open_streams``: signal a snapshot (``traced``), wait for it, return RSS."""
    if not traced:
        return proc.rss_bytes
    signals = iter((signal.SIGUSR1, signal.SIGUSR2))

    def take() -> int:
        signum = next(signals)
        path = folder / f"{int(signum)}.snap"
        os.kill(proc.process.pid, signum)
        deadline = time.monotonic() + 300
        while not path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no snapshot from {proc.name}:\n{proc.log()}")
            time.sleep(0.1)
        return proc.rss_bytes()

    return take


def account(folder: Path, streams: int, root: Path) -> dict[str, dict[str, float]]:
    """Bytes per stream allocated between the snapshots, by file and by line (paths from ``root``)."""
    before = tracemalloc.Snapshot.load(str(folder / f"{int(signal.SIGUSR1)}.snap"))
    after = tracemalloc.Snapshot.load(str(folder / f"{int(signal.SIGUSR2)}.snap"))
    prefixes = (sys.prefix + "/lib/", sys.base_prefix + "/lib/", str(root) + "/")

    def short(name: str) -> str:
        for prefix in prefixes:
            if name.startswith(prefix):
                return name[len(prefix) :].removeprefix("python3.11/").removeprefix("site-packages/")
        return name

    out: dict[str, dict[str, float]] = {}
    for group in ("filename", "lineno"):
        rows: dict[str, float] = {}
        for stat in after.compare_to(before, group):
            frame = stat.traceback[0]
            where = short(frame.filename) + (f":{frame.lineno}" if group == "lineno" else "")
            rows[where] = rows.get(where, 0.0) + stat.size_diff / streams
        out[group] = rows
    return out


def report(name: str, rss_kb: float, rows: dict[str, dict[str, float]], top: int) -> str:
    lines = [f"## {name}: RSS {rss_kb:.1f} KB per stream (under tracemalloc)"]
    total = sum(rows["filename"].values())
    lines.append(f"traced Python allocations: {total / 1024:.2f} KB per stream")
    for group in ("filename", "lineno"):
        lines.append(f"\n| {group} | bytes per stream |\n|---|---:|")
        for where, size in sorted(rows[group].items(), key=lambda kv: -abs(kv[1]))[:top]:
            lines.append(f"| {where} | {size:,.0f} |")
    return "\n".join(lines)


def difference(a: str, b: str, rows: dict[str, dict[str, dict[str, float]]], top: int) -> str:
    lines = [f"## {b} minus {a}, bytes per stream, by line\n| line | {a} | {b} | diff |\n|---|---:|---:|---:|"]
    ra, rb = rows[a]["lineno"], rows[b]["lineno"]
    diffs = {k: rb.get(k, 0.0) - ra.get(k, 0.0) for k in set(ra) | set(rb)}
    for where, diff in sorted(diffs.items(), key=lambda kv: -abs(kv[1]))[:top]:
        lines.append(f"| {where} | {ra.get(where, 0.0):,.0f} | {rb.get(where, 0.0):,.0f} | {diff:+,.0f} |")
    return "\n".join(lines)


def variant_spec(text: str) -> tuple[str, Path, str]:
    """``NAME=TREE:SERVER`` (TREE a source tree of the router, SERVER serve or uvicorn)."""
    name, _, rest = text.partition("=")
    tree, _, server = rest.rpartition(":")
    if not name or not tree or server not in ("serve", "uvicorn"):
        raise argparse.ArgumentTypeError("a variant is NAME=TREE:SERVER, SERVER serve or uvicorn")
    return name, Path(tree).resolve(), server


def measure(
    variant: Variant, server: str, args: argparse.Namespace, workdir: Path, vendor_url: str, accounts: dict[str, Any]
) -> float:
    """Open the streams on a fresh router of ``variant``; print its account, return RSS per stream (KB)."""
    folder = Path(tempfile.mkdtemp(prefix=variant.name + "-", dir=workdir))
    database = f"sqlite:///{folder / 'router.sqlite3'}"
    variant.env = {**variant.env, "DATABASE_URL": database, "MEMTRACE_DIR": str(folder)}
    variant.key = prepare(variant, vendor_url)
    proc = variant.process = start_router(variant, server, folder, lambda port: command(server, port, args.frames))
    try:
        target = variant.target()
        asyncio.run(workloads.latency_interleaved([target], "stream", 5, stream=True))
        rss = snapshotter(proc, folder, args.frames > 0)
        result = asyncio.run(workloads.open_streams(target, args.streams, 1.0, rss))
    finally:
        proc.stop()
    if not result["all_keepalive"]:
        raise RuntimeError(f"{variant.name}: not every stream stayed open with keepalives: {result}")
    if args.frames:
        rows = account(folder, args.streams, variant.root)
        print(report(variant.name, result["rss_per_stream_kb"], rows, args.top), flush=True)
        accounts[variant.name] = rows
    return float(result["rss_per_stream_kb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant",
        type=variant_spec,
        action="append",
        help="NAME=TREE:SERVER, repeatable (default: now=<this tree>:serve)",
    )
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=1, help="traceback depth tracemalloc keeps; 0: RSS only")
    parser.add_argument("--rounds", type=int, default=1, help="each variant this many times, in turn")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    accounts: dict[str, Any] = {}
    specs = args.variant or [("now", processes.ROOT, "serve")]
    raise_open_files()
    workdir = Path(tempfile.mkdtemp(prefix="siraya-memory-bench-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    base.update(DJANGO_SETTINGS_MODULE="siraya_site.settings", LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    base.update(SIRAYA_KEY_CACHE_SECONDS="5", SIRAYA_VAR_DIR=str(workdir), SIRAYA_KEEPALIVE_SECONDS="1")
    # Under tracemalloc a burst of admissions can take longer than the outage bound (2 s), which
    # then answers 503 database_unavailable: this tool is about memory, so the bound is wider.
    base.update(SIRAYA_DB_UNAVAILABLE_SECONDS="10")
    rss: dict[str, list[float]] = {name: [] for name, _, _ in specs}
    vendor = processes.start_vendor(base, workdir)
    try:
        for i in range(args.rounds):
            for name, root, server in specs[i % len(specs) :] + specs[: i % len(specs)]:
                variant = Variant(name, root, dict(base))
                rss[name].append(measure(variant, server, args, workdir, vendor.url, accounts))
                print(f"{name}: RSS {rss[name][-1]:.2f} KB per stream", flush=True)
    finally:
        vendor.stop()
    print("\n| variant | RSS per stream (KB), median (min-max) |\n|---|---:|")
    for name, runs in rss.items():
        print(f"| {name} | {statistics.median(runs):.2f} ({min(runs):.2f}-{max(runs):.2f}) |")
    if len(specs) == 2 and args.frames:
        print(difference(specs[0][0], specs[1][0], accounts, args.top))


if __name__ == "__main__":
    main()
