"""The production command (``python -m siraya_site.serve``): its server stack and its workers.

Real processes on loopback: the parent binds the port, the workers accept on it, and SIGTERM
goes to the parent as an orchestrator would send it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from billing.models import RouterInstance, UsageRecord
from conftest import ROOT, Cast, LiveServer, free_port, make_cast, wait_settled
from lib import tokens
from ops.http_errors import HeadLimitedHttpToolsProtocol
from ops.tests.test_bad_input import chat_head, raw_request
from routing.tests.sse_client import RawStream, content_of

SERVE = [sys.executable, "-m", "siraya_site.serve", "--port", "{port}", "--log-level", "warning"]
MESSAGES = [{"role": "user", "content": "Tell me a long story."}]
STACK = re.compile(r"worker (\d+) serving: loop ([\w.]+), http ([\w.]+)")
GRACE = 2.0
# uvicorn's httptools protocol with the request head bounded (ops.http_errors).
HTTPTOOLS = "ops.http_errors.HeadLimitedHttpToolsProtocol"


@pytest.fixture
def serve(server_factory, fake_openai, transactional_db) -> Iterator[Any]:
    """Start the production command with ``--workers``; kill any worker a failed test leaves."""
    started: list[LiveServer] = []

    def start(workers: int, **env: str) -> tuple[LiveServer, Cast]:
        env = {"LOG_LEVEL": "INFO", "SIRAYA_SHUTDOWN_GRACE_SECONDS": str(GRACE), **env}
        # Workers start side by side, each loading Django: slower than one process on a busy machine.
        argv = [*SERVE, "--workers", str(workers)]
        server = server_factory(env, argv=argv, name=f"serve-{workers}", start_seconds=30.0 * workers)
        started.append(server)
        return server, make_cast(server.url, fake_openai.url + "/v1")

    yield start
    wait_settled()
    for server in started:
        workers = _children(server.process.pid)
        server.stop()
        for pid in workers:  # left running if the parent had to be killed
            _kill(pid)


def test_production_command_serves_on_uvloop_and_httptools(serve):
    server, cast = serve(1)
    assert cast.chat().status_code == 200
    (stack,) = _stacks(server, 1)
    assert stack == (server.process.pid, "uvloop.Loop", HTTPTOOLS)
    assert issubclass(HeadLimitedHttpToolsProtocol, HttpToolsProtocol)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(10) == 0


@pytest.mark.parametrize(
    "extra",
    [
        b"X-Padding: " + b"a" * 20_000 + b"\r\n",
        b"".join(b"X-H%d: v\r\n" % i for i in range(600)),
        b"X-Nul: a\x00b\r\n",
        b"X-Padding: " + b"a" * 2_000_000 + b"\r\n",
    ],
    ids=["20kb-header", "600-headers", "nul-byte", "2mb-header"],
)
def test_head_refused_by_the_http_parser_gets_openai_shaped_400(serve, extra):
    server, cast = serve(1)
    body = orjson.dumps({"model": cast.model, "messages": MESSAGES})
    rss_before = _rss(server.process.pid)
    try:
        status, headers, payload = raw_request(cast.url, chat_head(f"Bearer {cast.key}".encode(), body, extra), body)
    except (ConnectionError, OSError):
        assert len(extra) > 1_000_000  # refused while the client was still sending
    else:
        assert (status, headers[b"content-type"]) == (400, b"application/json")
        assert orjson.loads(payload)["error"]["code"] == "bad_request"
    # Not gathered in memory (httptools alone would hold all of it), and the server still serves:
    # a request whose first read holds the head and a large body is not taken for a long head.
    assert _rss(server.process.pid) - rss_before < 1_000_000
    big = [{"role": "user", "content": "word " * 40_000}]
    assert cast.chat(messages=big).status_code == 200
    with httpx.Client(base_url=cast.url, headers=cast.headers(), timeout=30) as client:  # one connection
        for _ in range(3):
            assert (
                client.post("/v1/chat/completions", json={"model": cast.model, "messages": MESSAGES}).status_code == 200
            )


def test_sigterm_to_the_parent_drains_the_streams_of_every_worker(serve, fake_openai):
    server, cast = serve(2)
    stacks = _stacks(server, 2)
    workers = {pid for pid, _, _ in stacks}
    assert len(workers) == 2 and server.process.pid not in workers
    assert {(loop, http) for _, loop, http in stacks} == {("uvloop.Loop", HTTPTOOLS)}
    from routing.models import Vendor
    from routing.services import model_create

    # The fake takes per-request behaviour from the upstream model id: ~1 s and ~30 s streams.
    vendor = Vendor.objects.get(name="fake")
    model_create("test/short", deployments=[(vendor, "fake?tokens=10&token_delay=0.1", 0, 1)])
    model_create("test/long", deployments=[(vendor, "fake?tokens=300&token_delay=0.1", 0, 1)])
    streams = _streams_on_every_worker(cast, workers)
    sent_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    _wait_refused(server.url)

    answers = _read_all(streams)
    assert server.process.wait(GRACE + 15) == 0
    assert time.monotonic() - sent_at < GRACE + 10
    for (model, stream, first), payloads in zip(streams, answers, strict=True):
        assert payloads[-1] == "[DONE]"
        record = cast.record(stream.headers["x-generation-id"])
        text = content_of(first) + "".join(content_of(p) for p in payloads[:-2])
        if model == "test/short":  # whole within the grace period
            assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
            assert record.status == "completed"
        else:  # stopped at its end, with the error chunk, billed what was delivered
            assert payloads[-2]["error"]["code"] == "server_shutdown"
            assert (record.status, record.error_code) == ("cancelled", "server_shutdown")
        assert record.completion_tokens == tokens.count_text(text, "cl100k_base") > 0
    stopped = RouterInstance.objects.filter(pid__in=workers)
    assert sorted(i.pid for i in stopped if i.stopped_at is not None) == sorted(workers)


def test_a_worker_that_dies_is_reported_replaced_and_its_stream_settled(serve, fake_openai):
    server, cast = serve(2, SIRAYA_HEARTBEAT_SECONDS="0.5", SIRAYA_CHECKPOINT_SECONDS="0.2")
    workers = {pid for pid, _, _ in _stacks(server, 2)}
    from routing.models import Vendor
    from routing.services import model_create

    model_create("test/long", deployments=[(Vendor.objects.get(name="fake"), "fake?tokens=300&token_delay=0.1", 0, 1)])
    stream = RawStream(cast.url, cast.key, {"model": "test/long", "messages": MESSAGES, "stream": True})
    assert stream.next_data()
    generation_id = stream.headers["x-generation-id"]
    victim = _worker_of(generation_id)
    # Killed once a checkpoint of what it delivered is written: recovery bills that much.
    _wait_for(lambda: UsageRecord.objects.get(generation_id=generation_id).tokens_delivered > 0, 5)
    checkpoint = UsageRecord.objects.get(generation_id=generation_id).tokens_delivered
    os.kill(victim, signal.SIGKILL)

    # The connection went with the worker: what was in flight, then the end, without [DONE].
    rest = []
    while (data := stream.next_data()) is not None:
        rest.append(data)
    assert "[DONE]" not in rest
    _wait_for(lambda: f"worker {victim} died with status -9; starting a replacement" in server.log(), 10)
    replacement = {pid for pid, _, _ in _stacks(server, 3, timeout=60)} - workers
    assert len(replacement) == 1 and replacement <= set(_children(server.process.pid))
    record = cast.record(generation_id, timeout=10)
    assert (record.status, record.completion_tokens) == ("interrupted", checkpoint)
    assert cast.chat().status_code == 200
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(15) == 0


def test_a_worker_that_fails_before_serving_stops_the_parent(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "siraya_site.settings", "SIRAYA_ENV": "production"}
    for name in ("SECRET_KEY", "ALLOWED_HOSTS"):
        env.pop(name, None)  # production settings refuse to load without them
    command = [part.replace("{port}", str(free_port())) for part in [*SERVE, "--workers", "2"]]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert process.wait(60) == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert re.search(r"worker \d+ exited with status \d+ before serving; stopping", log.read_text())
    assert "must be set when SIRAYA_ENV=production" in log.read_text()


# -- helpers -----------------------------------------------------------------------------------


def _stacks(server: LiveServer, count: int, timeout: float = 30.0) -> list[tuple[int, str, str]]:
    """Each worker's own report of its running event loop and HTTP protocol, once ``count`` did."""
    _wait_for(lambda: len(STACK.findall(server.log())) >= count, timeout)
    found = STACK.findall(server.log())
    return [(int(pid), loop, http) for pid, loop, http in found]


def _streams_on_every_worker(cast: Cast, workers: set[int]) -> list[tuple[str, RawStream, Any]]:
    """Open short and long streams until each worker serves at least one of each kind."""
    streams: list[tuple[str, RawStream, Any]] = []
    served: dict[str, set[int]] = {"test/short": set(), "test/long": set()}
    while any(pids != workers for pids in served.values()):
        assert len(streams) < 40, f"the kernel gave every connection to one worker: {served}"
        for model in served:
            stream = RawStream(cast.url, cast.key, {"model": model, "messages": MESSAGES, "stream": True})
            first = stream.next_data()
            assert isinstance(first, dict)
            served[model].add(_worker_of(stream.headers["x-generation-id"]))
            streams.append((model, stream, first))
    return streams


def _worker_of(generation_id: str) -> int:
    """The pid of the worker that admitted the request (its usage record names the instance)."""
    deadline = time.monotonic() + 5
    while (record := UsageRecord.objects.filter(generation_id=generation_id).first()) is None:
        assert time.monotonic() < deadline, f"no usage record for {generation_id}"
        time.sleep(0.01)
    return RouterInstance.objects.get(id=record.instance_id).pid


def _wait_refused(url: str) -> None:
    deadline = time.monotonic() + 3
    while True:
        try:
            httpx.get(url + "/healthz", timeout=1)
        except httpx.ConnectError:
            return
        assert time.monotonic() < deadline, "still accepting after SIGTERM"
        time.sleep(0.05)


def _read_all(streams: list[tuple[str, RawStream, Any]]) -> list[list[Any]]:
    """Read every stream to its end at once (threads: the drain runs in parallel on each worker)."""
    answers: list[list[Any]] = [[] for _ in streams]

    def read(i: int, stream: RawStream) -> None:
        while (data := stream.next_data()) is not None:
            answers[i].append(data)
            if data == "[DONE]":
                return

    threads = [threading.Thread(target=read, args=(i, s)) for i, (_, s, _) in enumerate(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GRACE + 15)
    return answers


def _wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
