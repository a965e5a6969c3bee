"""Flow control towards the client: a send that gives up on a client that stopped reading.

Under uvicorn (``siraya_site.serve``) ``send`` waits while the connection's write buffer is
above its high-water mark (64 KiB), so a slow client holds the relay, the relay stops
reading the vendor's response, and TCP pushes back to the vendor: each stream buffers a
bounded amount. A client whose buffer stays full for ``SIRAYA_CLIENT_STALL_SECONDS`` is
treated as gone: its connection is aborted, not flushed (a flush would wait forever).

daphne's ``send`` never waits (Twisted buffers without limit), so under daphne neither the
backpressure nor the stall detection applies; production runs ``siraya_site.serve``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]


class ClientStalled(Exception):
    """The client took no data for the stall timeout."""


def stall_guarded(send: Send, seconds: float, on_stall: Callable[[], None]) -> Send:
    """Wrap ASGI ``send`` so a body write blocked for ``seconds`` raises ``ClientStalled``.

    ``on_stall`` runs first, before the connection is aborted (whose disconnect event follows).
    """

    async def guarded(message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body":
            await send(message)
            return
        try:
            async with asyncio.timeout(seconds):
                await send(message)
        except TimeoutError:
            on_stall()
            abort_connection(send)
            raise ClientStalled from None

    return guarded


def abort_connection(send: Send) -> None:
    """Drop the client's connection without flushing (uvicorn's send is bound to its cycle)."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if isinstance(transport, asyncio.Transport):
        transport.abort()
