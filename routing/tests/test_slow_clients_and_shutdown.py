"""Under the production runner (uvicorn, ``siraya_site.serve``): a client that leaves, slow clients and SIGTERM."""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time

import httpx
import orjson
import pytest

from conftest import make_cast, wait_settled
from lib import tokens
from routing.tests.sse_client import RawStream, content_of

SERVE = [sys.executable, "-m", "siraya_site.serve", "--port", "{port}", "--log-level", "warning"]
MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


@pytest.fixture
def served(server_factory, fake_openai, transactional_db):
    def start(**env: str):
        server = server_factory(env, argv=SERVE, name="serve")
        return server, make_cast(server.url, fake_openai.url + "/v1")

    yield start
    wait_settled()


def test_a_client_that_leaves_is_told_by_the_server_with_one_task_per_request(served, fake_openai):
    """The production protocol calls the relay when the connection is lost: no second task per
    request waits on ``receive()`` for the disconnect, and the vendor is closed all the same."""
    server, cast = served()
    fake_openai.scenario.tokens = 3
    assert cast.chat(stream=True).status_code == 200  # warm up (tokenizer tables loaded)
    idle = httpx.get(server.url + "/debug/tasks", timeout=5).json()["tasks"]
    fake_openai.scenario.tokens, fake_openai.scenario.token_delay = 50, 0.2
    stream = RawStream(cast.url, cast.key, {"model": cast.model, "messages": MESSAGES, "stream": True})
    received = ""
    while received.count(" ") < 5:
        received += content_of(stream.next_data())
    # The stream's request and its keepalive, and no task watching for the disconnect.
    assert httpx.get(server.url + "/debug/tasks", timeout=5).json()["tasks"] - idle == 2
    generation_id = stream.headers["x-generation-id"]
    request = fake_openai.last()
    closed = stream.close()
    seen = fake_openai.wait_closed(request)
    assert seen is not None and seen - closed < 1.0, "the vendor never saw the client's close"
    record = cast.record(generation_id)
    assert (record.status, record.error_code) == ("cancelled", "client_disconnected")
    assert record.completion_tokens == 5 == tokens.count_text(received, "cl100k_base")


def stalled_client(url: str, key: str, body: dict) -> socket.socket:
    """POST a streamed request from a socket with a tiny receive buffer, then never read."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    payload = orjson.dumps(body)
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def test_client_that_stops_reading_bounds_the_stream_and_is_cut_after_the_stall_timeout(served, fake_openai):
    stall = 10.0
    server, cast = served(SIRAYA_CLIENT_STALL_SECONDS=str(stall))
    fake_openai.scenario.tokens = 3
    assert cast.chat(stream=True).status_code == 200  # warm up (tokenizer tables loaded)
    chunks, per_chunk = 100_000, 200  # ~1.8 kB of content a chunk: 180 MB if it were all buffered
    fake_openai.scenario.tokens = chunks
    fake_openai.scenario.words_per_chunk = per_chunk
    rss_before = _rss(server.process.pid)
    sock = stalled_client(cast.url, cast.key, {"model": cast.model, "messages": MESSAGES, "stream": True})
    while len(fake_openai.requests) < 2:
        time.sleep(0.01)
    request = fake_openai.requests[1]
    plateau = _plateau(request, steady=1.0, timeout=stall - 2)
    blocked_at = time.monotonic()
    # Backpressure reached the vendor: it is blocked, having written a bounded part of the answer
    # (what the kernel's socket buffers hold), and the router did not buffer it in memory.
    assert 0 < plateau < chunks * per_chunk // 4, f"vendor wrote {plateau} tokens: the router buffered the answer"
    assert _rss(server.process.pid) - rss_before < 40 * 1024 * 1024
    closed = fake_openai.wait_closed(request, timeout=stall + 5)
    assert closed is not None, "the stalled client's stream was not cancelled"
    assert closed - blocked_at < stall + 3
    record = cast.record(_last_generation(cast), timeout=15)
    assert (record.status, record.error_code) == ("cancelled", "client_stalled")
    assert 0 < record.completion_tokens <= plateau
    sock.close()


def test_sigterm_lets_streams_finish_within_the_grace_period_and_settles_the_rest(served, fake_openai):
    server, cast = served(SIRAYA_SHUTDOWN_GRACE_SECONDS="2")
    from routing.models import Vendor
    from routing.services import model_create

    # The fake takes per-request behaviour from the upstream model id.
    model_create("test/long", deployments=[(Vendor.objects.get(name="fake"), "fake?tokens=300", 0, 1)])
    fake_openai.scenario.token_delay = 0.1
    fake_openai.scenario.tokens = 10  # the short stream: ~1 s
    short = RawStream(cast.url, cast.key, {"model": cast.model, "messages": MESSAGES, "stream": True})
    short_first = short.next_data()
    # The long stream: ~30 s, beyond the grace period.
    long = RawStream(cast.url, cast.key, {"model": "test/long", "messages": MESSAGES, "stream": True})
    long_first = long.next_data()
    assert short_first and long_first
    sent_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)

    # New connections are refused at once.
    deadline = time.monotonic() + 3
    while True:
        try:
            httpx.get(server.url + "/healthz", timeout=1)
        except httpx.ConnectError:
            break
        assert time.monotonic() < deadline, "still accepting after SIGTERM"
        time.sleep(0.05)

    results: dict[str, list] = {}

    def drain(name: str, stream: RawStream) -> None:
        payloads = []
        while (data := stream.next_data()) is not None:
            payloads.append(data)
            if data == "[DONE]":
                break
        results[name] = payloads

    threads = [threading.Thread(target=drain, args=item) for item in (("short", short), ("long", long))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    server.process.wait(15)
    exited = time.monotonic() - sent_at
    assert exited < 2 + 8

    short_payloads = results["short"]
    assert short_payloads[-1] == "[DONE]"
    assert short_payloads[-2]["choices"][0]["finish_reason"] == "stop"
    long_payloads = results["long"]
    assert long_payloads[-1] == "[DONE]"
    assert long_payloads[-2]["error"]["code"] == "server_shutdown"
    long_text = content_of(long_first) + "".join(content_of(p) for p in long_payloads[:-2])

    from lib import tokens

    short_record = cast.record(short.headers["x-generation-id"])
    long_record = cast.record(long.headers["x-generation-id"])
    assert short_record.status == "completed"
    assert (long_record.status, long_record.error_code) == ("cancelled", "server_shutdown")
    assert long_record.completion_tokens == tokens.count_text(long_text, "cl100k_base") > 0
    assert fake_openai.wait_closed(fake_openai.requests[-1]) is not None


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _plateau(request, steady: float, timeout: float) -> int:
    """Return the vendor's tokens written once the count has not moved for ``steady`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = request.tokens_written, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = request.tokens_written
        if now != last:
            last, since = now, time.monotonic()
        elif now and time.monotonic() - since >= steady:
            return now
    raise AssertionError(f"the vendor never blocked: {last} tokens written")


def _last_generation(cast) -> str:
    from billing.models import UsageRecord

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        record = UsageRecord.objects.filter(api_key=cast.api_key).order_by("-id").first()
        if record is not None:
            return record.generation_id
        time.sleep(0.01)
    raise AssertionError("no usage record")
