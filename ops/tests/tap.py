"""The router's ASGI application with every response copied to a file (``SIRAYA_RESPONSE_TAP``).

The test suite serves through this so that, at the end of a run, it can scan every
response any live router sent for the secrets the run created (see ``conftest.py``).
Not for production: it writes every answer to disk.
"""

from __future__ import annotations

import os
from typing import Any

from siraya_site.asgi import application as router_application

_tap_path = os.environ.get("SIRAYA_RESPONSE_TAP", "")
_tap = open(_tap_path, "ab", buffering=0) if _tap_path else None  # kept open for the process's life


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if _tap is None or scope["type"] != "http":
        await router_application(scope, receive, send)
        return

    async def send_tapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = b"".join(k + b": " + v + b"\n" for k, v in message.get("headers", ()))
            _tap.write(f"\n--- {scope['method']} {scope['path']} {message['status']}\n".encode() + headers)
        elif message["type"] == "http.response.body":
            _tap.write(message.get("body", b""))
        await send(message)

    await router_application(scope, receive, send_tapped)
