"""Run the router in production: uvicorn on uvloop and httptools, with a graceful shutdown.

    python -m siraya_site.serve --host 0.0.0.0 --port 8000 --workers 2

Why uvicorn rather than daphne: uvicorn's ``send`` waits while a slow client's write buffer
is full, which is what bounds each stream's memory and lets the router notice a client that
stopped reading (``routing.relay.flow``); daphne buffers without limit. And on SIGTERM
daphne cancels every running request at once, while this runner stops accepting, lets
running streams finish for ``SIRAYA_SHUTDOWN_GRACE_SECONDS``, then stops the rest (an
error chunk, then ``[DONE]``) and settles their usage records before exiting with status 0.

With ``--workers N`` a parent process binds the port once and starts N worker processes
that accept on that one socket. SIGTERM (or SIGINT) to the parent is forwarded to every
worker, each drains as above, and the parent exits once they all have: with status 0 if
each worker exited cleanly. A worker that dies is logged and replaced (the records of the
requests it was serving are settled by ``billing.recovery`` in the other processes); a
worker that fails before it serves stops the parent, since a replacement would fail too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event

import uvicorn

# Backstop for connections that are still open after the streams were drained and settled.
_CLOSE_BACKSTOP_SECONDS = 5
# How often the parent looks for workers that died.
_WATCH_SECONDS = 0.2

logger = logging.getLogger("siraya.serve")
supervisor_logger = logging.getLogger("uvicorn.error")  # configured in the parent, which loads no Django


class RouterServer(uvicorn.Server):
    """uvicorn's server, with the router's drain on shutdown and a clean exit after it."""

    def __init__(self, config: uvicorn.Config, ready: Event | None = None) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        loop = type(asyncio.get_running_loop())
        protocol = self.config.http_protocol_class
        logger.info(
            "worker %d serving: loop %s.%s, http %s.%s",
            os.getpid(),
            loop.__module__,
            loop.__qualname__,
            protocol.__module__,
            protocol.__qualname__,
        )
        if self.ready is not None and self.started:
            self.ready.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        from django.conf import settings

        from routing.relay import lifecycle

        for server in self.servers:
            server.close()  # stop accepting before the grace period starts
        await lifecycle.drain(settings.SIRAYA_SHUTDOWN_GRACE_SECONDS)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM as uvicorn does, without raising the signal again at the
        end: after a completed drain the process exits with status 0, not killed by SIGTERM."""
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _worker(config: uvicorn.Config, sock: socket.socket, ready: Event) -> None:
    """Serve on the parent's socket until SIGTERM (runs in a spawned worker process)."""
    config.configure_logging()
    RouterServer(config, ready).run([sock])


class Workers:
    """Start ``count`` workers on one socket, replace those that die, forward SIGTERM and wait."""

    def __init__(self, config: uvicorn.Config, count: int) -> None:
        self.config = config
        self.count = count
        self.context = multiprocessing.get_context("spawn")
        self.stopping = threading.Event()

    def run(self) -> int:
        """Return the exit status: 0 if every worker drained and exited cleanly."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        sock = self.config.bind_socket()
        workers = [self._start(sock) for _ in range(self.count)]
        failed = self._watch(sock, workers)
        sock.close()  # once the workers close theirs too, new connections are refused
        for process, _ in workers:
            if process.exitcode is None:
                process.terminate()  # SIGTERM: the worker drains
        for process, _ in workers:
            process.join()
        codes = [process.exitcode for process, _ in workers]
        supervisor_logger.info("workers exited with status %s", codes)
        return 1 if failed or any(code != 0 for code in codes) else 0

    def _start(self, sock: socket.socket) -> tuple[SpawnProcess, Event]:
        ready = self.context.Event()
        process = self.context.Process(target=_worker, args=(self.config, sock, ready), name="siraya-worker")
        process.start()
        return process, ready

    def _watch(self, sock: socket.socket, workers: list[tuple[SpawnProcess, Event]]) -> bool:
        """Replace workers that die until SIGTERM; return True if one failed before serving."""
        while not self.stopping.wait(_WATCH_SECONDS):
            for i, (process, ready) in enumerate(workers):
                if process.is_alive():
                    continue
                process.join()
                if not ready.is_set():
                    supervisor_logger.error(
                        "worker %d exited with status %s before serving; stopping", process.pid, process.exitcode
                    )
                    return True
                supervisor_logger.error(
                    "worker %d died with status %s; starting a replacement", process.pid, process.exitcode
                )
                workers[i] = self._start(sock)
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the Siraya Model Router.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes on the one port")
    parser.add_argument("--backlog", type=int, default=2048, help="pending connections the socket queues")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info").lower())
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "siraya_site.settings")
    config = uvicorn.Config(
        "siraya_site.asgi:application",
        host=args.host,
        port=args.port,
        backlog=args.backlog,
        lifespan="on",
        # uvicorn's httptools protocol, with the request head bounded as under daphne.
        http="ops.http_errors:HeadLimitedHttpToolsProtocol",
        loop="uvloop",
        log_level=args.log_level,
        # The router writes its own access log line (siraya.access, with the generation id).
        access_log=False,
        timeout_graceful_shutdown=_CLOSE_BACKSTOP_SECONDS,
        server_header=False,
    )
    if args.workers == 1:
        RouterServer(config).run()
        return
    sys.exit(Workers(config, args.workers).run())


if __name__ == "__main__":
    main()
