"""Profile the router under load with py-spy: ``python -m bench.profile [--workload stream] [--seconds 8]``.

Starts the same processes as ``bench.run`` (fake vendor, router on a fresh database), drives
the router (or with ``--target recorded`` the recorded relay) at concurrency 32 and samples it
with ``py-spy record``. Prints its CPU time per request by thread and layer (``bench.layers``),
then the functions with the most samples, inclusive and self (py-spy's collapsed stacks,
aggregated here). ``--database postgres``: the router on a fresh PostgreSQL database with Redis,
as ``bench.workers`` sets them up, and the CPU time per request of the PostgreSQL backends
serving it too (the server must run on this machine).
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

from bench import layers, processes, workers, workloads
from bench.limits import raise_open_files
from bench.loadgen import Target
from bench.run import PROFILES, Bench, router_target, upstream_target


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
    parser.add_argument(
        "--target", choices=("router", "recorded"), default="router", help="recorded: the recorded relay"
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--server", choices=processes.SERVERS, default="serve")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--threads", choices=("all", "loop", "workers"), default="all")
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results" / "profile.txt")
    args = parser.parse_args()
    if args.target == "recorded" and args.database != "sqlite":
        parser.error("the recorded relay writes with the sqlite3 module: --database sqlite")
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
            if args.target == "router":
                served = bench.start("router", processes.ROUTER_APP)
                target = router_target("router", served, key)
            else:
                env = {**bench.env, "BENCH_UPSTREAM": vendor.url + "/v1"}
                served = bench.start("recorded", processes.RECORDED_APP, env)
                target = upstream_target("recorded", served, key)
            collapsed = Path(workdir) / "profile.txt"
            result = asyncio.run(sampled(served, target, args, collapsed, url))
            args.output.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(collapsed, args.output.with_suffix(".raw"))  # py-spy's stacks, for other cuts
            report = (
                f"{args.workload} at c=32 on {args.server}, {args.target}, {args.database}: {result}\n\n"
                + layers.report(collapsed, result["cpu_us_per_request"])
                + "\n\n"
                + summarise(collapsed, args.top, args.threads)
            )
            args.output.write_text(report)
            print(report)
        finally:
            bench.stop_all()


async def sampled(
    served: processes.Process, target: Target, args: argparse.Namespace, collapsed: Path, url: str
) -> dict[str, Any]:
    """Drive ``target`` at concurrency 32 while py-spy samples its process over the measured window;
    its CPU time per request, and on PostgreSQL the backends' too."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    stream = args.workload == "stream"
    # Warm the process (connections, caches) before sampling starts.
    await workloads.throughput(target, args.workload, 32, 1.0, stream)
    backends: list[float] = []

    def cpu() -> float:  # read at the start and at the end of the measured window
        if args.database == "postgres":
            backends.append(workers.backend_cpu_seconds(url))
        return served.cpu_seconds()

    command = [py_spy, "record", "-p", str(served.process.pid), "-f", "raw", "-o", str(collapsed), "-r", "250"]
    command += ["-d", str(int(args.seconds)), "--nonblocking", *(["--gil"] if args.gil else [])]
    spy = await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = await workloads.throughput(target, args.workload, 32, args.seconds, stream, cpu)
    await asyncio.wait_for(spy.wait(), 30)
    if len(backends) == 2 and result["requests"]:
        result["postgres_cpu_us_per_request"] = (backends[1] - backends[0]) / result["requests"] * 1e6
    return result


if __name__ == "__main__":
    main()
