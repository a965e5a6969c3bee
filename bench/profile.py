"""Profile the router under load with py-spy: ``python -m bench.profile [--workload stream] [--seconds 8]``.

Starts the same processes as ``bench.run`` (fake vendor, router on a fresh database), drives
the router at concurrency 32 and samples it with ``py-spy record``. Prints the functions with
the most samples, inclusive and self (py-spy's collapsed stacks, aggregated here), after the
router's CPU time per request. ``--database postgres``: on a fresh PostgreSQL database with
Redis, as ``bench.workers`` sets them up, and the CPU time per request of the PostgreSQL
backends serving the router too (the server must run on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import processes, workers, workloads
from bench.limits import raise_open_files
from bench.loadgen import Target
from bench.run import PROFILES, Bench, router_target


def summarise(collapsed: Path, top: int, threads: str = "all") -> str:
    """Aggregate py-spy's collapsed stacks; ``threads``: all, loop (the event loop's) or workers."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        in_worker = "Thread._bootstrap" in stack
        if (threads == "loop" and in_worker) or (threads == "workers" and not in_worker):
            continue
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] + ")" for f in stack.split(";")
        ]
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", choices=("complete", "stream"), default="complete")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--server", choices=processes.SERVERS, default="serve")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--threads", choices=("all", "loop", "workers"), default="all")
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results" / "profile.txt")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raise_open_files()
    with (
        tempfile.TemporaryDirectory(prefix="siraya-profile-") as workdir,
        workers.fresh_database(args.database, Path(workdir), "profile") as url,
        workers.redis_prefix(args.database) as shared,
    ):
        bench = Bench(PROFILES["quick"], args.server, Path(workdir))
        bench.env.update({"DATABASE_URL": url, **shared})
        vendor = processes.start_vendor(bench.env, bench.workdir)
        bench.started.append(vendor)
        try:
            key = processes.prepare_database(bench.env, vendor.url)
            router = bench.start("router", processes.ROUTER_APP)
            collapsed = Path(workdir) / "profile.txt"
            spy = subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "-p",
                    str(router.process.pid),
                    "-f",
                    "raw",
                    "-o",
                    str(collapsed),
                    "-r",
                    "250",
                    "-d",
                    str(int(args.seconds)),
                    "--nonblocking",
                    *(["--gil"] if args.gil else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result = load(router_target("router", router, key), args, router, url)
            spy.wait(30)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(collapsed, args.output.with_suffix(".raw"))  # py-spy's stacks, for other cuts
            report = f"{args.workload} at c=32 on {args.server}, {args.database}: {result}\n\n" + summarise(
                collapsed, args.top, args.threads
            )
            args.output.write_text(report)
            print(report)
        finally:
            bench.stop_all()


def load(target: Target, args: argparse.Namespace, router: processes.Process, url: str) -> dict[str, Any]:
    """Drive the router at concurrency 32; its CPU time per request, and PostgreSQL's on PostgreSQL."""
    backends: list[float] = []

    def cpu() -> float:  # read at the start and at the end of the measured window
        if args.database == "postgres":
            backends.append(workers.backend_cpu_seconds(url))
        return router.cpu_seconds()

    stream = args.workload == "stream"
    result = asyncio.run(workloads.throughput(target, args.workload, 32, args.seconds, stream, cpu))
    if len(backends) == 2 and result["requests"]:
        result["postgres_cpu_us_per_request"] = (backends[1] - backends[0]) / result["requests"] * 1e6
    return result


if __name__ == "__main__":
    main()
