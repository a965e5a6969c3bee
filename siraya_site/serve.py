"""Run the router in production: uvicorn, with client backpressure and a graceful shutdown.

    python -m siraya_site.serve --host 0.0.0.0 --port 8000

Why uvicorn rather than daphne: uvicorn's ``send`` waits while a slow client's write buffer
is full, which is what bounds each stream's memory and lets the router notice a client that
stopped reading (``routing.relay.flow``); daphne buffers without limit. And on SIGTERM
daphne cancels every running request at once, while this runner stops accepting, lets
running streams finish for ``SIRAYA_SHUTDOWN_GRACE_SECONDS``, then stops the rest (an
error chunk, then ``[DONE]``) and settles their usage records before exiting.
"""

from __future__ import annotations

import argparse
import os
import socket

import uvicorn

# Backstop for connections that are still open after the streams were drained and settled.
_CLOSE_BACKSTOP_SECONDS = 5


class RouterServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        from django.conf import settings

        from routing.relay import lifecycle

        for server in self.servers:
            server.close()  # stop accepting before the grace period starts
        await lifecycle.drain(settings.SIRAYA_SHUTDOWN_GRACE_SECONDS)
        await super().shutdown(sockets)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the Siraya Model Router.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info").lower())
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "siraya_site.settings")
    config = uvicorn.Config(
        "siraya_site.asgi:application",
        host=args.host,
        port=args.port,
        lifespan="on",
        http="h11",
        loop="asyncio",
        log_level=args.log_level,
        timeout_graceful_shutdown=_CLOSE_BACKSTOP_SECONDS,
        server_header=False,
    )
    RouterServer(config).run()


if __name__ == "__main__":
    main()
