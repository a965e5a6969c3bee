"""The benchmark's measurements; each takes targets and returns plain figures."""

from __future__ import annotations

import asyncio
import random
import statistics
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from bench.loadgen import Conn, Response, Target, now, percentile


async def _fresh(conn: Conn | None, target: Target) -> Conn:
    if conn is None or conn.lost:
        return await Conn.open(target.host, target.port)
    return conn


async def latency_interleaved(targets: list[Target], workload: str, rounds: int, stream: bool) -> dict[str, Any]:
    """Concurrency 1: one request per target per round, in a shuffled order each round.

    Non-streamed: the time to the whole answer. Streamed: the time to the first ``data:`` event.
    """
    conns: dict[str, Conn | None] = {t.name: None for t in targets}
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    errors = dict.fromkeys(conns, 0)
    order = list(targets)
    for _ in range(rounds):
        random.shuffle(order)
        for target in order:
            conn = await _fresh(conns[target.name], target)
            conns[target.name] = conn
            try:
                r = await conn.request(target.request(workload, stream), sse=stream)
            except ConnectionError:
                errors[target.name] += 1
                continue
            if r.status != 200:
                errors[target.name] += 1
                continue
            end = r.first_token_at if stream else r.done_at
            samples[target.name].append(((end or r.done_at) - r.sent_at) * 1000)
    for leftover in conns.values():
        if leftover is not None:
            leftover.close()
    return {name: _summary(values, errors[name]) for name, values in samples.items()}


def _summary(values: list[float], errors: int) -> dict[str, Any]:
    return {
        "n": len(values),
        "errors": errors,
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "mean_ms": sum(values) / len(values) if values else float("nan"),
    }


async def throughput(
    target: Target,
    workload: str,
    concurrency: int,
    seconds: float,
    stream: bool,
    cpu: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """``concurrency`` keep-alive clients back to back for ``seconds`` (after a short warm-up).

    With ``cpu`` (the serving process's CPU seconds so far, e.g. ``Process.cpu_seconds``), also the
    CPU time it spent per request counted: far steadier than requests/s on a shared machine.
    """
    warmup = min(0.5, seconds / 4)
    start = now() + warmup
    end = start + seconds
    counts = {"requests": 0, "chunks": 0, "errors": 0}
    ttft: list[float] = []
    cpu_window: list[float] = []

    async def sample_cpu() -> None:
        assert cpu is not None
        for moment in (start, end):
            await asyncio.sleep(max(0.0, moment - now()))
            cpu_window.append(cpu())

    async def worker() -> None:
        conn: Conn | None = None
        raw = target.request(workload, stream)
        while now() < end:
            try:
                conn = await _fresh(conn, target)
                r = await conn.request(raw, sse=stream)
            except (ConnectionError, OSError):
                counts["errors"] += 1
                conn = None
                continue
            if not start <= r.done_at <= end:
                continue
            if r.status != 200:
                counts["errors"] += 1
                continue
            counts["requests"] += 1
            counts["chunks"] += r.chunks
            if r.first_token_at is not None:
                ttft.append((r.first_token_at - r.sent_at) * 1000)
        if conn is not None:
            conn.close()

    samplers = [sample_cpu()] if cpu is not None else []
    await asyncio.gather(*(worker() for _ in range(concurrency)), *samplers)
    result: dict[str, Any] = {
        "requests_per_s": counts["requests"] / seconds,
        "errors": counts["errors"],
        "requests": counts["requests"],
    }
    if cpu is not None and counts["requests"]:
        result["cpu_us_per_request"] = (cpu_window[1] - cpu_window[0]) / counts["requests"] * 1e6
    if stream:
        result["chunks_per_s"] = counts["chunks"] / seconds
        result["ttft_p50_ms"] = percentile(ttft, 50)
    return result


async def throughput_interleaved(
    targets: list[Target],
    workload: str,
    concurrency: int,
    seconds: float,
    rounds: int,
    stream: bool,
    cpu: dict[str, Callable[[], float]] | None = None,
) -> dict[str, Any]:
    """Run ``throughput`` for each target in turn, ``rounds`` times; keep each target's median round
    (and, with ``cpu`` readers by target name, the median of its rounds' CPU time per request)."""
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    order = list(targets)
    readers = cpu or {}
    for i in range(rounds):
        for target in order[i % len(order) :] + order[: i % len(order)]:
            result = await throughput(target, workload, concurrency, seconds, stream, readers.get(target.name))
            runs[target.name].append(result)
    key = "chunks_per_s" if stream else "requests_per_s"
    kept = {name: dict(sorted(results, key=lambda r: r[key])[len(results) // 2]) for name, results in runs.items()}
    for name, results in runs.items():
        costs = [r["cpu_us_per_request"] for r in results if "cpu_us_per_request" in r]
        if costs:
            kept[name]["cpu_us_per_request"] = statistics.median(costs)
    return kept


async def open_streams(
    target: Target, count: int, keepalive_s: float, rss: Callable[[], int], opening: int = 200
) -> dict[str, Any]:
    """Hold ``count`` slow streams open at once; RSS growth per stream and keepalives on every one."""
    baseline = rss()
    conns: list[Conn] = []
    responses: list[Response] = []
    gate = asyncio.Semaphore(opening)
    failures = 0

    async def open_one() -> None:
        nonlocal failures
        async with gate:
            try:
                conn = await Conn.open(target.host, target.port)
            except OSError:
                failures += 1
                return
            response = Response(sse=True)
            first = asyncio.get_running_loop().create_future()

            def opened(_: Response) -> None:
                if not first.done():
                    first.set_result(None)

            response.on_event = opened
            conn.send(target.request("hold", True), response)
            conns.append(conn)
            responses.append(response)
            try:
                await asyncio.wait_for(asyncio.shield(first), 60)
            except (TimeoutError, ConnectionError):
                failures += 1

    t0 = now()
    await asyncio.gather(*(open_one() for _ in range(count)))
    opened_s = now() - t0
    # Every stream must now get a keepalive comment of its own (after all were open).
    mark = now()
    deadline = mark + keepalive_s * 3 + 5
    while now() < deadline:
        if all(r.last_keepalive_at is not None and r.last_keepalive_at > mark for r in responses):
            break
        await asyncio.sleep(0.1)
    held = rss()
    alive = sum(1 for c in conns if not c.lost)
    with_keepalive = sum(1 for r in responses if r.last_keepalive_at is not None and r.last_keepalive_at > mark)
    for conn in conns:
        conn.close()
    return {
        "streams": count,
        "open": alive,
        "failures": failures,
        "with_keepalive": with_keepalive,
        "all_keepalive": with_keepalive == count and alive == count,
        "open_seconds": opened_s,
        "rss_baseline_mb": baseline / 2**20,
        "rss_held_mb": held / 2**20,
        "rss_per_stream_kb": (held - baseline) / count / 1024,
    }


async def cancellations(
    targets: list[Target], vendor: Target, count: int, concurrency: int
) -> dict[str, list[dict[str, Any]]]:
    """Close ``count`` streams per target at random points; when did the vendor see its socket close?

    The fake vendor writes a token every 50 ms; the client closes 0-10 ms after the k-th token
    (k random in 0..30, 0 meaning right after the opening role chunk), so the tokens it received
    are exactly the tokens the relay handed over.
    """
    jobs = [(t, random.randint(0, 30), random.uniform(0, 0.010)) for _ in range(count) for t in targets]
    random.shuffle(jobs)
    results: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    gate = asyncio.Semaphore(concurrency)
    probe = await Conn.open(vendor.host, vendor.port)
    probe_lock = asyncio.Lock()

    async def closed_at(tag: str) -> dict[str, Any]:
        nonlocal probe
        raw = f"GET /_bench/closed?tag={tag} HTTP/1.1\r\nHost: {vendor.host}\r\n\r\n".encode()
        async with probe_lock:
            probe = await _fresh(probe, vendor)
            return dict(orjson.loads((await probe.request(raw)).body))

    async def one(target: Target, k: int, pause: float) -> None:
        async with gate:
            tag = uuid.uuid4().hex
            conn = await Conn.open(target.host, target.port)
            reached = asyncio.get_running_loop().create_future()

            def on_event(r: Response) -> None:
                if r.tokens >= k and r.chunks >= 1 and not reached.done():
                    reached.set_result(None)

            response = Response(sse=True, count_tokens=True)
            response.on_event = on_event
            conn.send(target.request("cancel", True, f"bench-tag:{tag}"), response)
            await asyncio.wait_for(reached, 30)
            await asyncio.sleep(pause)
            closed = conn.close()
            delivered = response.tokens
            report: dict[str, Any] = {"seen": False, "closed_at": None}
            deadline = now() + 2
            while now() < deadline:
                report = await closed_at(tag)
                if report["closed_at"] is not None:
                    break
                await asyncio.sleep(0.002)
            seen = report["closed_at"]
            results[target.name].append(
                {
                    "generation_id": response.generation_id,
                    "delivered_tokens": delivered,
                    "close_ms": (seen - closed) * 1000 if seen is not None else None,
                    "vendor_tokens_written": report.get("tokens_written"),
                }
            )

    await asyncio.gather(*(one(*job) for job in jobs))
    probe.close()
    return results
