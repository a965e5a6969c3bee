"""The fake OpenAI vendor as its own process, so it shares no GIL with the router or the load generator.

``python -m bench.vendor`` prints ``PORT <n>`` once it listens and runs until SIGTERM. Besides the
fake's own behaviour it answers ``GET /_bench/closed?tag=...``: when the request whose first
message was ``bench-tag:<tag>`` saw its client's socket close (``time.monotonic()``, the same
clock in every process on Linux) and how many tokens it had written.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from typing import Any

from bench.limits import raise_open_files
from fakevendors.openai import FakeOpenAI
from fakevendors.server import Connection, RecordedRequest

TAG = b'"bench-tag:'


class BenchVendor(FakeOpenAI):
    def __init__(self) -> None:
        super().__init__()
        self.tagged: dict[str, RecordedRequest] = {}

    async def respond(self, request: RecordedRequest, conn: Connection) -> None:
        if request.path == "/_bench/closed":
            conn.send_json(200, self.closed_report(request.query.get("tag", [""])[0]))
            return
        # Keep memory bounded over hundreds of thousands of requests; tagged ones are kept below.
        self.requests.clear()
        if TAG in request.body:
            content = request.json()["messages"][0]["content"]
            self.tagged[content.removeprefix("bench-tag:")] = request
        await super().respond(request, conn)

    def closed_report(self, tag: str) -> dict[str, Any]:
        request = self.tagged.get(tag)
        if request is None:
            return {"seen": False, "closed_at": None, "tokens_written": 0}
        return {"seen": True, "closed_at": request.closed_at, "tokens_written": request.tokens_written}


def main() -> None:
    raise_open_files()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    vendor = BenchVendor().start()
    print(f"PORT {vendor.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    vendor.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
