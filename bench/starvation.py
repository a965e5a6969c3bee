"""Starvation: do megabyte prompts on one key delay everyone else's admission, or the heartbeat?

    python -m bench.starvation                  # 20 s of load, prints the figures
    python -m bench.starvation --seconds 10 --heavy 6 --text base64

Starts, each in its own process on loopback: the fake OpenAI vendor (``bench.vendor``) and two
router processes on one fresh SQLite database: the *loaded* router, and an *observer* that only
runs its heartbeat, whose recovery settles as ``interrupted`` any in-progress record of a router
whose heartbeat is older than ``--stale`` seconds. Then, for ``--seconds``:

- ``--heavy`` clients send 1 MB prompts to the loaded router, back to back, alternating between
  a key with a tokens-per-minute limit and a key with a credit limit (both far above the load:
  nothing is refused, but both make the router count every prompt);
- one client sends small streamed requests on a key without limits and measures the time to the
  response headers (the router sends them with the first token: admission, then the vendor);
- one client holds a slow stream open the whole time (a live request, in progress throughout:
  the observer would settle it as ``interrupted`` if the loaded router's heartbeat fell silent);
- a thread reads the loaded router's ``heartbeat_at`` from the database every 20 ms.

Prints the light requests' latency percentiles, the heartbeat intervals (the largest against the
stale bound) and how many records were settled as ``interrupted`` (live requests taken for dead:
it must be 0). Everything stops by itself; ``run()`` returns the same figures (a test uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench import processes
from bench.loadgen import percentile

# A hundred common English words: realistic prose costs the tokenizer about 20 ms per megabyte.
_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an they you "
    "were her she there been one all we their has would when if so no will more about can out them some what only "
    "other time into could may do then first any my now such like our over man me even most made after also did many "
    "before must through back years where much your way well down should because each just those people how too"
).split()


def prompt_text(size: int, kind: str, seed: int = 1) -> str:
    """``size`` characters of prose (``words``) or of base64 (``base64``: about 0.7 tokens per character)."""
    rng = random.Random(seed)
    if kind == "base64":
        return base64.b64encode(rng.randbytes(size * 3 // 4 + 3)).decode()[:size]
    return " ".join(rng.choice(_WORDS) for _ in range(size // 4))[:size]


@dataclass
class Figures:
    seconds: float
    heavy_sent: int = 0
    heavy_statuses: dict[str, int] = field(default_factory=dict)
    light_ms: list[float] = field(default_factory=list)
    light_errors: int = 0
    long_streams: int = 0
    heartbeats: list[datetime] = field(default_factory=list)
    heartbeat_gaps: list[float] = field(default_factory=list)
    interrupted: int = 0
    stale_seconds: float = 0.0
    heartbeat_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        light = self.light_ms
        return {
            "seconds": round(self.seconds, 1),
            "heavy_requests": self.heavy_sent,
            "heavy_statuses": self.heavy_statuses,
            "light_requests": len(light),
            "light_errors": self.light_errors,
            "long_streams": self.long_streams,
            "light_headers_ms": {
                "p50": round(percentile(light, 50), 1) if light else None,
                "p95": round(percentile(light, 95), 1) if light else None,
                "p99": round(percentile(light, 99), 1) if light else None,
                "max": round(max(light), 1) if light else None,
            },
            "heartbeat_seconds": self.heartbeat_seconds,
            "heartbeats_seen": len(self.heartbeats),
            "heartbeat_interval_max_s": round(max(self.heartbeat_gaps), 3) if self.heartbeat_gaps else None,
            "heartbeat_interval_mean_s": (
                round(sum(self.heartbeat_gaps) / len(self.heartbeat_gaps), 3) if self.heartbeat_gaps else None
            ),
            "stale_seconds": self.stale_seconds,
            "interrupted_records": self.interrupted,
        }


# -- the database: prepared in a child process, read here with sqlite3 (no Django in this process) -----


def _prepare(vendor_url: str) -> None:
    """``python -m bench.starvation --prepare <vendor url>``: migrate, add the model and three keys."""
    import django

    django.setup()
    from decimal import Decimal

    from django.core.management import call_command

    from billing.services import api_key_create
    from routing.services import model_create, vendor_create

    call_command("migrate", verbosity=0, interactive=False)
    vendor = vendor_create("fake", "openai", vendor_url, credentials={"api_key": "sk-bench-vendor"})
    models = {
        "bench/complete": "fake?tokens=16",
        "bench/stream": "fake?tokens=8",
        "bench/long": "fake?tokens=100000&token_delay=0.05",
    }
    for name, upstream in models.items():
        model_create(name, deployments=[(vendor, upstream, 0, 1)], input_price=Decimal("1"), output_price=Decimal("2"))
    _, tpm = api_key_create("heavy-tpm", tokens_per_minute=10**12)
    _, credit = api_key_create("heavy-credit", credit_limit=Decimal("1000000"))
    _, light = api_key_create("light")
    print(json.dumps({"heavy": [tpm, credit], "light": light}))


def _heartbeat_at(db: Path, pid: int) -> datetime | None:
    with sqlite3.connect(db, timeout=5) as conn:
        row = conn.execute("SELECT heartbeat_at FROM billing_routerinstance WHERE pid = ?", (pid,)).fetchone()
    return None if row is None else datetime.fromisoformat(str(row[0]))


def _interrupted(db: Path) -> int:
    with sqlite3.connect(db, timeout=5) as conn:
        return int(conn.execute("SELECT count(*) FROM billing_usagerecord WHERE status = 'interrupted'").fetchone()[0])


def _watch_heartbeat(db: Path, pid: int, stop: threading.Event, seen: list[datetime]) -> None:
    while not stop.wait(0.02):
        try:
            beat = _heartbeat_at(db, pid)
        except sqlite3.Error:
            continue  # locked for longer than the timeout: try again
        if beat is not None and (not seen or beat != seen[-1]):
            seen.append(beat)


# -- the load -----------------------------------------------------------------------------------


async def _heavy(client: httpx.AsyncClient, url: str, key: str, body: bytes, until: float, figures: Figures) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    while time.monotonic() < until:
        try:
            response = await client.post(url, content=body, headers=headers)
            status = str(response.status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        figures.heavy_sent += 1
        figures.heavy_statuses[status] = figures.heavy_statuses.get(status, 0) + 1


async def _light(client: httpx.AsyncClient, url: str, key: str, until: float, figures: Figures) -> None:
    body = {"model": "bench/stream", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            async with client.stream("POST", url, json=body, headers=headers) as response:
                waited = (time.perf_counter() - started) * 1000
                await response.aread()
            if response.status_code == 200:
                figures.light_ms.append(waited)
            else:
                figures.light_errors += 1
        except httpx.HTTPError:
            figures.light_errors += 1
        await asyncio.sleep(0.02)


async def _long(client: httpx.AsyncClient, url: str, key: str, until: float, figures: Figures) -> None:
    body = {"model": "bench/long", "messages": [{"role": "user", "content": "Go on."}], "stream": True}
    while time.monotonic() < until:
        try:
            async with client.stream("POST", url, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
                async for _ in response.aiter_bytes():
                    if time.monotonic() >= until:
                        break
            figures.long_streams += 1
        except httpx.HTTPError:
            figures.light_errors += 1


async def _load(
    router_url: str, keys: dict[str, Any], heavy: int, body: bytes, seconds: float, figures: Figures
) -> None:
    url = router_url + "/v1/chat/completions"
    until = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=heavy + 6)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        tasks = [_heavy(client, url, keys["heavy"][i % 2], body, until, figures) for i in range(heavy)]
        tasks.append(_light(client, url, keys["light"], until, figures))
        tasks.append(_long(client, url, keys["light"], until, figures))
        await asyncio.gather(*tasks)


def run(
    seconds: float = 20.0,
    heavy: int = 4,
    prompt_bytes: int = 1_000_000,
    text: str = "words",
    heartbeat: float = 0.5,
    stale: float = 30.0,
    server: str = "serve",
    env: dict[str, str] | None = None,
    workdir: Path | None = None,
) -> Figures:
    """Run the scenario of the module's doc; return its figures."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="siraya-starvation-"))
    db = workdir / "starvation.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "siraya_site.settings",
        "DATABASE_URL": f"sqlite:///{db}",
        "SIRAYA_VAR_DIR": str(workdir / "var"),
        "SIRAYA_HEARTBEAT_SECONDS": str(heartbeat),
        "SIRAYA_INSTANCE_STALE_SECONDS": str(stale),
        "SIRAYA_MAX_BODY_BYTES": str(max(prompt_bytes * 2, 4 * 1024 * 1024)),
        "LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    for name in ("REDIS_URL", "SIRAYA_RESPONSE_TAP"):
        env.pop(name, None)
    started: list[processes.Process] = []
    try:
        vendor = processes.start_vendor(env, workdir)
        started.append(vendor)
        keys = processes.prepared(env, ["bench.starvation", "--prepare", vendor.url + "/v1"])
        router = processes.start_server("router", server, processes.ROUTER_APP, env, workdir)
        started.append(router)
        observer = processes.start_server("observer", server, processes.ROUTER_APP, env, workdir)
        started.append(observer)
        body = json.dumps(
            {"model": "bench/complete", "messages": [{"role": "user", "content": prompt_text(prompt_bytes, text)}]}
        ).encode()
        figures = Figures(seconds, stale_seconds=stale, heartbeat_seconds=heartbeat)
        stop = threading.Event()
        watcher = threading.Thread(
            target=_watch_heartbeat, args=(db, router.process.pid, stop, figures.heartbeats), daemon=True
        )
        # The load generator sends its first request before the watcher's first read: a router
        # under daphne registers its instance only then.
        watcher.start()
        began = time.monotonic()
        try:
            asyncio.run(_load(router.url, keys, heavy, body, seconds, figures))
        finally:
            stop.set()
            watcher.join(5)
        figures.seconds = time.monotonic() - began
        beats = figures.heartbeats
        figures.heartbeat_gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(beats)]
        figures.interrupted = _interrupted(db)
        return figures
    finally:
        for proc in reversed(started):
            proc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", metavar="VENDOR_URL", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--heavy", type=int, default=4, help="clients sending 1 MB prompts back to back")
    parser.add_argument("--prompt-bytes", type=int, default=1_000_000)
    parser.add_argument("--text", choices=("words", "base64"), default="words")
    parser.add_argument("--heartbeat", type=float, default=0.5, help="SIRAYA_HEARTBEAT_SECONDS of both routers")
    parser.add_argument("--stale", type=float, default=30.0, help="SIRAYA_INSTANCE_STALE_SECONDS of both routers")
    parser.add_argument("--server", choices=processes.SERVERS, default="serve")
    args = parser.parse_args(argv)
    if args.prepare:
        _prepare(args.prepare)
        return 0
    figures = run(args.seconds, args.heavy, args.prompt_bytes, args.text, args.heartbeat, args.stale, args.server)
    summary = figures.summary()
    print(json.dumps(summary, indent=2))
    return 0 if summary["interrupted_records"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
