"""Request bodies on every path, under the production runner (uvicorn, ``siraya_site.serve``)
and under daphne (development).

Over real loopback sockets: a body over its path's limit is refused with 413 without being read
(the server reads at most about the limit, so the client's socket is still writing when the
answer comes), a body dripped in too slowly gets 408, and either way the connection is closed.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass

import orjson
import pytest

from billing.services import api_key_create
from conftest import dechunk, start_server

SERVE = [sys.executable, "-m", "siraya_site.serve", "--port", "{port}", "--log-level", "warning"]
FORM_LIMIT = 64 * 1024
API_LIMIT = 256 * 1024
READ_SECONDS = 2.0
PATHS = ["/healthz", "/admin/login/", "/v1/chat/completions"]


@dataclass
class Edge:
    host: str
    port: int
    key: str

    def head(self, path: str, framing: str) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.key}\r\n"
            f"Content-Type: application/json\r\n{framing}\r\n\r\n"
        ).encode()

    def connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=30)
        return sock


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def edge_server(request, django_db_setup, django_db_blocker):
    """The production runner, and daphne (``make run``: there twisted reads the body, and
    ``ops.http_errors`` applies the same limits while it does)."""
    server = start_server(
        {
            "SIRAYA_MAX_FORM_BODY_BYTES": str(FORM_LIMIT),
            "SIRAYA_MAX_BODY_BYTES": str(API_LIMIT),
            "SIRAYA_BODY_READ_SECONDS": str(READ_SECONDS),
        },
        argv=SERVE if request.param == "uvicorn" else None,
        name=f"edge-{request.param}",
    )
    yield server
    server.stop()


@pytest.fixture
def edge(edge_server, transactional_db):
    host, port = edge_server.url.removeprefix("http://").split(":")
    _, key = api_key_create("edge")
    return Edge(host, int(port), key)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after its answer
    at: float  # monotonic time the answer's head arrived


def read_answer(sock: socket.socket, keep_alive: bool = False) -> Answer:
    """Read one response and (unless ``keep_alive``) wait for the server to close the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed without an answer: {data!r}")
        data += chunk
    at = time.monotonic()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    chunked = headers.get("transfer-encoding") == "chunked"
    while not (body.endswith(b"0\r\n\r\n") if chunked else len(body) >= int(headers["content-length"])):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    if chunked:
        body = dechunk(body)
    closed = False
    if not keep_alive:
        try:
            closed = sock.recv(65536) == b""
        except ConnectionResetError:
            closed = True
    return Answer(int(lines[0].split()[1]), headers, body, closed, at)


def assert_refused(answer: Answer, path: str, status: int, code: str) -> None:
    assert answer.status == status, answer
    assert answer.closed, "the connection stayed open after the refusal"
    if path.startswith("/v1/"):
        assert answer.headers["content-type"] == "application/json"
        error = orjson.loads(answer.body)["error"]
        assert (error["code"], error["type"]) == (code, "invalid_request_error" if status == 413 else "timeout_error")
    else:
        assert answer.headers["content-type"].startswith("text/plain")
        assert b"<" not in answer.body


def limit_of(path: str) -> int:
    return API_LIMIT if path.startswith("/v1/") else FORM_LIMIT


class Writer(threading.Thread):
    """Send ``chunks`` on a socket until they run out or the server closes; count what was sent."""

    def __init__(self, sock: socket.socket, chunks, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.sock, self.chunks, self.pause = sock, chunks, pause
        self.sent = 0
        self.failed = False

    def run(self) -> None:
        try:
            for chunk in self.chunks:
                self.sock.sendall(chunk)
                self.sent += len(chunk)
                if self.pause:
                    time.sleep(self.pause)
        except OSError:
            self.failed = True


@pytest.mark.parametrize("path", PATHS)
def test_declared_body_over_the_limit_is_refused_before_it_is_read(edge, path):
    with edge.connect() as sock:
        sock.sendall(edge.head(path, f"Content-Length: {10 * 1024**3}"))  # 10 GB announced, none sent
        answer = read_answer(sock)
    assert_refused(answer, path, 413, "request_too_large")


@pytest.mark.parametrize("path", PATHS)
def test_chunked_body_over_the_limit_is_refused_while_it_streams_in(edge, path):
    piece = b"x" * 65536
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    total = 128 * 1024 * 1024  # what the client would send: 2000 times the largest limit
    with edge.connect() as sock:
        sock.sendall(edge.head(path, "Transfer-Encoding: chunked"))
        writer = Writer(sock, (chunk for _ in range(total // len(piece))))
        writer.start()
        answer = read_answer(sock)
        writer.join(30)
    assert_refused(answer, path, 413, "request_too_large")
    assert not writer.is_alive() and writer.failed, "the server went on reading the body after refusing it"
    # What the server took: its limit, plus what the kernel's socket buffers held when it closed.
    assert writer.sent < limit_of(path) + 24 * 1024 * 1024, writer.sent


@pytest.mark.parametrize("path", PATHS)
def test_body_dripped_slower_than_the_deadline_gets_408_and_is_closed(edge, path):
    with edge.connect() as sock:
        started = time.monotonic()  # before the server can see the request and start its clock
        sock.sendall(edge.head(path, "Content-Length: 1000"))
        writer = Writer(sock, (b" " for _ in range(1000)), pause=0.1)  # 100 s to send it all
        writer.start()
        answer = read_answer(sock)
        writer.join(10)
    assert_refused(answer, path, 408, "request_timeout")
    assert answer.at - started >= READ_SECONDS
    assert writer.sent < 1000 and not writer.is_alive()


def test_body_within_the_deadline_and_the_limit_is_served(edge):
    body = b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}'
    with edge.connect() as sock:
        sock.sendall(edge.head("/v1/chat/completions", f"Content-Length: {len(body)}"))
        writer = Writer(sock, (body[i : i + 8] for i in range(0, len(body), 8)), pause=0.05)
        writer.run()
        answer = read_answer(sock, keep_alive=True)
    # Read in full and parsed: the unknown model is the relay's answer, not the edge's.
    assert answer.status == 404, answer
    assert orjson.loads(answer.body)["error"]["code"] == "model_not_found"


def test_bad_key_gets_401_without_its_body_being_read(edge, edge_server):
    with edge.connect() as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer sk-siraya-nope\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        answer = read_answer(sock)  # no byte of the body was sent
    if "siraya_site.serve" in edge_server.process.args:  # uvicorn
        assert answer.status == 401
        assert orjson.loads(answer.body)["error"]["code"] == "invalid_api_key"
    else:
        # daphne hands a request to the application only once its body is in: the key is
        # checked after the body (within its limit and deadline), never before.
        assert answer.status == 408
    assert answer.closed


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_form_body_at_the_limit_reaches_django(edge, framing):
    body = b"username=staff&password=" + b"p" * (FORM_LIMIT - 24)
    assert len(body) == FORM_LIMIT
    head = b"POST /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n" + (
        b"Content-Length: %d\r\n\r\n" % len(body) if framing == "length" else b"Transfer-Encoding: chunked\r\n\r\n"
    )
    if framing == "chunked":
        body = b"".join(b"%x\r\n" % len(part) + part + b"\r\n" for part in (body[:4000], body[4000:])) + b"0\r\n\r\n"
    with edge.connect() as sock:
        sock.sendall(head + body)
        answer = read_answer(sock, keep_alive=True)
    # Django read the form and answered it itself: the login form wants its CSRF token.
    assert answer.status == 403, answer
    assert answer.headers["content-type"].startswith("text/html")
