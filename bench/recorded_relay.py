"""The recorded relay: the bare relay plus the least issue #7 asks of every request.

A second floor, between the bare relay and the router. On top of the bare relay's pass-through
(its own functions, so the same server, HTTP client and client watch) it does only what no
gateway that bills can skip, in the cheapest way this stack allows:

- the key: SHA-256 of the bearer token looked up in a dict loaded from ``billing_apikey``;
- the body: parsed with orjson (the model name is needed to record the request) and
  serialised again for the vendor, as any relay that edits a request must;
- the usage record: one INSERT into ``billing_usagerecord`` (the router's own table, with all
  its indexes) awaited before the vendor is called, and one UPDATE with the vendor's token
  counts awaited after the answer was relayed, both group-committed on one writer thread with
  the plain ``sqlite3`` module (no Django), one transaction and one loop wake-up per batch.

No rate limits, routing, cost in ``Decimal``, day totals, checkpoints, metrics or logs: the
gap between this and the bare relay is the price of recording a request at all on this stack,
the gap between it and the router the price of the router's other features. SQLite only
(the benchmark's database, from ``DATABASE_URL``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import secrets
import sqlite3
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from bench.bare_relay import _read_body, handled_aside, watched
from bench.bare_relay import _relay as relay_through

INSTANCE = "recorded-relay"
# Values for the NOT NULL columns the router's admission leaves at their defaults.
_JSON_LISTS = {"attempts"}
_SETTLE = (
    "UPDATE billing_usagerecord SET status = 'completed', http_status = ?, prompt_tokens = ?,"
    " completion_tokens = ?, usage_source = 'vendor', finished_at = ?, duration_ms = ?"
    " WHERE id = ? AND status = 'in_progress'"
)
_ADMIT_COLUMNS = ("generation_id", "api_key_id", "model_name", "status", "streamed", "created_at", "instance_id")


def database_path() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("sqlite:///"):
        raise RuntimeError("the recorded relay runs on the benchmark's SQLite database (DATABASE_URL=sqlite:///...)")
    return url.removeprefix("sqlite:///")


def _connect() -> sqlite3.Connection:
    conn = sqlite3.connect(database_path(), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # as the router's settings
    return conn


def admit_sql(conn: sqlite3.Connection) -> str:
    """The INSERT of an opened record: the admission columns bound, every other NOT NULL column
    without a default given a constant (the router writes its defaults as constants too)."""
    constants: dict[str, str] = {}
    for _, name, kind, not_null, default, _ in conn.execute("PRAGMA table_info(billing_usagerecord)"):
        if name == "id" or name in _ADMIT_COLUMNS or not not_null or default is not None:
            continue
        if name in _JSON_LISTS:
            constants[name] = "'[]'"
        elif any(t in kind.lower() for t in ("char", "text")):
            constants[name] = "''"
        else:
            constants[name] = "0"
    columns = ", ".join((*_ADMIT_COLUMNS, *constants))
    values = ", ".join(["?"] * len(_ADMIT_COLUMNS) + list(constants.values()))
    return f"INSERT INTO billing_usagerecord ({columns}) VALUES ({values})"


Write = tuple[str, tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[int]"]


class Writer:
    """Group commit: every write queued while the last transaction ran goes in the next one."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Write] = queue.SimpleQueue()
        conn = _connect()
        self.admit = admit_sql(conn)
        conn.close()
        threading.Thread(target=self.run, name="recorded-relay-writer", daemon=True).start()

    def submit(self, sql: str, params: tuple[Any, ...]) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self.queue.put((sql, params, loop, future))
        return future

    def run(self) -> None:
        conn = _connect()
        cursor = conn.cursor()
        while True:
            batch = [self.queue.get()]
            while len(batch) < 256:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            results: list[int] = []
            cursor.execute("BEGIN IMMEDIATE")
            for sql, params, _, _ in batch:
                cursor.execute(sql, params)
                results.append((cursor.lastrowid or 0) if sql is self.admit else cursor.rowcount)
            cursor.execute("COMMIT")
            settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int]]] = {}
            for (_, _, loop, future), result in zip(batch, results, strict=True):
                settled.setdefault(loop, []).append((future, result))
            for loop, futures in settled.items():
                loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[tuple[asyncio.Future[int], int]]) -> None:
    for future, result in futures:
        if not future.done():
            future.set_result(result)


_keys: dict[str, int] = {}
_writer: Writer | None = None


def _started() -> Writer:
    global _writer
    if _writer is None:
        conn = _connect()
        _keys.update({key_hash: key_id for key_id, key_hash in conn.execute("SELECT id, key_hash FROM billing_apikey")})
        conn.close()
        _writer = Writer()
    return _writer


def _now() -> str:
    return datetime.now(UTC).isoformat(sep=" ")  # as Django stores an aware datetime in SQLite


def vendor_usage(answer: bytes, stream: bool) -> tuple[int, int]:
    """(prompt, completion) tokens from the vendor's usage object (the last SSE event carrying one)."""
    if stream:
        for event in reversed(answer.split(b"\n\n")):
            if event.startswith(b"data: {") and b'"usage"' in event:
                answer = event[6:]
                break
        else:
            return 0, 0
    usage = orjson.loads(answer).get("usage") or {}
    return usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)


async def _respond(status: int, send: Any) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"error": {"message": "refused"}}'})


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if await handled_aside(scope, receive, send):
        return
    writer = _started()
    body = await _read_body(receive)
    if body is None:
        return
    token = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            token = value.removeprefix(b"Bearer ")
    key_id = _keys.get(hashlib.sha256(token).hexdigest())
    if key_id is None:
        await _respond(401, send)
        return
    request = orjson.loads(body)
    stream = bool(request.get("stream"))
    started = time.monotonic()
    generation_id = "gen-" + secrets.token_hex(12)
    admitted = (generation_id, key_id, request["model"], "in_progress", int(stream), _now(), INSTANCE)
    record_id = await writer.submit(writer.admit, admitted)
    parts: list[bytes] = []
    status = await watched(receive, relay_through(orjson.dumps(request), send, parts))
    if status is None:
        status = 499  # the client went away
    prompt, completion = vendor_usage(b"".join(parts), stream) if status == 200 else (0, 0)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    await writer.submit(_SETTLE, (status, prompt, completion, _now(), elapsed_ms, record_id))
