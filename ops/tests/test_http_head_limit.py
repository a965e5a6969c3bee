"""The request head's bounds under the production command's HTTP protocol, in process.

``HeadLimitedHttpToolsProtocol`` counts a head's bytes across reads of any size; these tests feed
it reads as a slow or hostile client would send them (one byte at a time, a head and a large
body in one read, several requests on one connection). The live server's answers are checked
in ``routing/tests/test_serve_workers.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.server import ServerState

from ops.http_errors import HEAD_LIMIT_BYTES, HEADER_LIMIT, HeadLimitedHttpToolsProtocol


class Transport(asyncio.Transport):
    """A connection that keeps what the server writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Connection:
    """The protocol on one connection, answering each request with the size of its body."""

    def __init__(self) -> None:
        self.bodies: list[int] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            size, more = 0, True
            while more:
                message = await receive()
                size, more = size + len(message.get("body", b"")), message.get("more_body", False)
            self.bodies.append(size)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

        config = Config(app=app, http=HeadLimitedHttpToolsProtocol, lifespan="off", access_log=False)
        config.load()
        self.protocol = HeadLimitedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
        self.transport = Transport()
        self.protocol.connection_made(self.transport)

    async def send(self, data: bytes, read_size: int) -> None:
        for i in range(0, len(data), read_size):
            if self.transport.closed:
                return
            self.protocol.data_received(data[i : i + read_size])
        for _ in range(10):  # let the application answer
            await asyncio.sleep(0)


def head(padding: int, headers: int = 0, body: int = 0) -> bytes:
    extra = b"".join(b"X-H%d: v\r\n" % i for i in range(headers))
    return (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nX-Padding: %s\r\n%s\r\n" % (body, b"a" * padding, extra)
        + b"b" * body
    )


def refused(connection: Connection) -> bool:
    status, _, body = connection.transport.written.partition(b"\r\n\r\n")
    return (
        status.startswith(b"HTTP/1.1 400 ")
        and b"content-type: application/json" in status
        and orjson.loads(body)["error"]["code"] == "bad_request"
        and connection.transport.closed
    )


def run(*requests: tuple[bytes, int]) -> Connection:
    """Send each (request, read size) on one new connection, in order; return the connection."""

    async def send_all() -> Connection:
        connection = Connection()
        for data, read_size in requests:
            await connection.send(data, read_size)
        return connection

    return asyncio.run(send_all())


def test_head_over_the_limit_is_refused_whatever_the_reads_sizes():
    for read_size in (1, 7, 4096, 1 << 20):
        connection = run((head(HEAD_LIMIT_BYTES), read_size))
        assert refused(connection) and connection.bodies == [], read_size


def test_heads_within_the_limit_are_served_one_after_another_on_one_connection():
    request = head(HEAD_LIMIT_BYTES - 200, body=10)
    connection = run((request, 1), (request, 3), (request, 4096))
    assert connection.bodies == [10, 10, 10]
    assert not connection.transport.closed


def test_a_large_body_read_with_its_head_is_not_counted_as_head():
    assert run((head(100, body=300_000), 1 << 20)).bodies == [300_000]


def test_too_many_headers_are_refused():
    connection = run((head(0, headers=HEADER_LIMIT), 1 << 20))
    assert refused(connection) and connection.bodies == []
