"""The client's disconnect as a call from the production command's protocol (``edge.DISCONNECT_CALLBACK``).

The protocol calls the relay when the connection is lost before the response completed; lost
before the relay registered (the client left during admission), it leaves ``False`` for the
relay to find. Either way the request is interrupted as ``client_disconnected``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from ops.http_errors import HeadLimitedHttpToolsProtocol
from routing.relay.channel import ClientChannel
from routing.relay.edge import DISCONNECT_CALLBACK
from routing.relay.flow import Interrupted

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


async def _send(message: dict[str, Any]) -> None:
    pass


async def _receive() -> dict[str, Any]:
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}


def _channel(scope: dict[str, Any]) -> ClientChannel:
    return ClientChannel({"type": "http", "headers": [], **scope}, _receive, _send, ())


def test_a_connection_lost_before_the_relay_registered_interrupts_the_request(settings: Any) -> None:
    async def main() -> tuple[str, bool]:
        channel = _channel({DISCONNECT_CALLBACK: False})
        with pytest.raises(Interrupted) as raised:
            async with channel.cancellable():
                await asyncio.sleep(10)
        return raised.value.reason, channel.disconnected

    assert asyncio.run(main()) == ("client_disconnected", True)


def test_the_server_s_call_interrupts_the_request_and_is_withdrawn_after_it(settings: Any) -> None:
    async def main() -> tuple[str, Any, bool]:
        scope: dict[str, Any] = {DISCONNECT_CALLBACK: None}
        channel = _channel(scope)
        with pytest.raises(Interrupted) as raised:
            async with channel.cancellable():
                callback = channel.scope[DISCONNECT_CALLBACK]
                asyncio.get_running_loop().call_later(0.01, callback)
                await asyncio.sleep(10)
        # No task waits on receive() meanwhile: the one running is this one.
        return raised.value.reason, channel.scope[DISCONNECT_CALLBACK], len(asyncio.all_tasks()) == 1

    assert asyncio.run(main()) == ("client_disconnected", None, True)


class _Transport:
    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name in ("peername", "sockname") else None

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _protocol(app: Any) -> HeadLimitedHttpToolsProtocol:
    config = Config(app, http="httptools", log_level="critical")
    config.load()
    protocol = HeadLimitedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(_Transport())  # type: ignore[arg-type]
    return protocol


def test_the_protocol_calls_the_relay_when_the_connection_is_lost() -> None:
    async def main() -> list[str]:
        calls: list[str] = []
        registered = asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope[DISCONNECT_CALLBACK] = lambda: calls.append("lost")
            registered.set()
            await asyncio.sleep(10)

        protocol = _protocol(app)
        protocol.data_received(HEAD)
        await registered.wait()
        protocol.connection_lost(None)
        return calls

    assert asyncio.run(main()) == ["lost"]


def test_the_protocol_leaves_false_when_the_relay_had_not_registered_yet() -> None:
    async def main() -> Any:
        seen: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope[DISCONNECT_CALLBACK])  # what the relay finds when it gets there

        protocol = _protocol(app)
        protocol.data_received(HEAD)  # the application's task is created, not yet run
        protocol.connection_lost(None)
        await asyncio.sleep(0.01)
        return seen

    assert asyncio.run(main()) == [False]
