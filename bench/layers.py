"""Where a request's CPU time goes, by thread and by layer: ``bench.profile --layers``.

py-spy's raw stacks of a serving process under load say how its busy samples split between the
event loop and its threads, and, by the file of the innermost Python frame, between the layers
of the stack (the ASGI server, the HTTP client to the vendor, asyncio's own Python, SQLite or
PostgreSQL statements, Django, the router's own code). Scaled by the CPU time per request read
from ``/proc`` over the same window, each share becomes microseconds per request, so the router
and the recorded relay (``bench.recorded_relay``) can be compared layer by layer.

Time spent in C is charged to the Python frame that called it: a statement's execution to the
line that runs it (``sql``), uvloop's own work (polling, socket reads and writes, callbacks) to
``asyncio.run``'s frame (``event loop (C)``). The recorded relay's writer runs its statements
inline: its samples in that function count as statements. A writer thread blocked on its
queue is not counted (py-spy does not always see that wait as idle).
"""

from __future__ import annotations

import collections
import linecache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (layer, the module paths that mark it, as py-spy names a frame's file): the innermost frame decides.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("django", ("django/",)),
    ("ASGI server (uvicorn)", ("uvicorn/", "httptools/")),
    ("HTTP client (httpx, aiohttp)", ("httpx/", "aiohttp/", "httpx_aiohttp/", "multidict/", "yarl/", "httpcore/")),
    ("event loop (C)", ("asyncio/runners.py",)),
    ("asyncio", ("asyncio/", "contextlib.py", "_weakrefset.py")),
    ("router: relay, dialects, vendors", ("routing/",)),
    ("router: billing", ("billing/",)),
    ("router: lib, ops, site", ("lib/", "ops/", "siraya_site/")),
    ("recorded relay", ("bench/",)),
)
# A statement run (the C work of the database charged to the line that runs it).
SQL: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("execute (", ("billing/hotsql/connection.py", "django/db/")),
    ("_commit (", ("django/db/",)),
    ("Writer.run (", ("bench/recorded_relay.py",)),
)


def _waiting(frame: str) -> bool:
    """A writer thread blocked on its queue: py-spy does not always see that wait as idle."""
    where = frame.rsplit(" (", 1)[-1].rstrip(")")
    path, _, line = where.rpartition(":")
    if not path.startswith(("billing/", "bench/")) or not line.isdigit():
        return False
    return "queue.get()" in linecache.getline(str(ROOT / path), int(line))


def _layer(frame: str) -> str:
    where = frame.rsplit(" (", 1)[-1]
    for name, paths in SQL:
        if frame.startswith(name) and where.startswith(paths):
            return "SQL statements"
    for layer, paths in LAYERS:
        if where.startswith(paths):
            return layer
    return "other (stdlib, orjson, ...)"


def split(collapsed: Path) -> dict[str, collections.Counter[str]]:
    """Samples by thread (the event loop's, or a thread's name by its run function) and layer."""
    out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        thread = "event loop"
        if "Thread._bootstrap" in stack:
            runs = [f.split(" (")[0] for f in frames if "Thread.run" not in f and "_bootstrap" not in f]
            thread = "thread: " + (runs[0] if runs else "?")
        if not _waiting(frames[-1]):
            out[thread][_layer(frames[-1])] += int(count_text)
    return out


def report(collapsed: Path, cpu_us_per_request: float) -> str:
    """Microseconds of CPU per request by thread and layer (the samples' shares of the measured figure)."""
    threads = split(collapsed)
    total = sum(sum(c.values()) for c in threads.values())
    if not total:
        return "no samples"
    scale = cpu_us_per_request / total
    lines = [f"CPU per request {cpu_us_per_request:,.0f} us, {total} samples", ""]
    for thread, layers in sorted(threads.items(), key=lambda item: -sum(item[1].values())):
        lines.append(f"{sum(layers.values()) * scale:7.0f} us  {thread}")
        lines += [f"{n * scale:11.0f} us  {layer}" for layer, n in layers.most_common() if n * scale >= 1]
    return "\n".join(lines)
