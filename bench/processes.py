"""Start and stop the benchmark's processes: the fake vendor, the router, the bare and recorded relays."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# The router's production command (the one the README deploys); {port} and {workers} are filled in.
SERVE = [
    sys.executable,
    "-m",
    "siraya_site.serve",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
    "--workers",
    "{workers}",
    "--log-level",
    "warning",
    "--backlog",
    "8192",
]
# The relays the router is compared with run on the same stack (uvicorn, uvloop, httptools,
# the same backlog) through uvicorn's own command: the production command serves the router only.
UVICORN = [
    sys.executable,
    "-m",
    "uvicorn",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--lifespan",
    "on",
    "--no-access-log",
    "--log-level",
    "warning",
    "--backlog",
    "8192",
    "{app}",
]
DAPHNE = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "{app}"]
# ``serve``: the production command (the default); ``daphne``: every process on daphne, for comparison.
SERVERS = ("serve", "daphne")
ROUTER_APP = "siraya_site.asgi:application"
BARE_APP = "bench.bare_relay:application"
RECORDED_APP = "bench.recorded_relay:application"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def children(self) -> list[int]:
        """The pids of the processes this one started (a server's workers), and theirs."""
        return _tree(self.process.pid)[1:]

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children (servers that fork workers)."""
        return sum(_rss(pid) for pid in _tree(self.process.pid))

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the process and its children (all their threads)."""
        return sum(pid_cpu_seconds(pid) for pid in _tree(self.process.pid))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pid_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process of this machine (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spawn(name: str, command: list[str], env: dict[str, str], workdir: Path) -> Process:
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Process(name, process, log_path)


def start_vendor(env: dict[str, str], workdir: Path) -> Process:
    vendor = _spawn("vendor", [sys.executable, "-m", "bench.vendor"], env, workdir)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in vendor.log_path.read_text().splitlines():
            if line.startswith("PORT "):
                vendor.port = int(line.split()[1])
                return vendor
        if vendor.process.poll() is not None:
            break
        time.sleep(0.02)
    vendor.stop()
    raise RuntimeError(f"fake vendor did not start:\n{vendor.log()}")


def prepared(env: dict[str, str], command: list[str]) -> Any:
    """Run a set-up command (``python -m <command>``) and return the JSON of its last line."""
    result = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"preparing the benchmark database failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def prepare_database(env: dict[str, str], vendor_url: str) -> str:
    """Migrate the benchmark database, add the vendor, models and a key; return the key."""
    return str(prepared(env, ["bench.prepare", vendor_url + "/v1"])["key"])


def server_command(server: str, app: str, port: int, workers: int = 1) -> list[str]:
    """The command that serves ``app`` under ``server`` (see ``SERVERS``)."""
    if server == "daphne":
        template = DAPHNE
    else:
        template = SERVE if app == ROUTER_APP else UVICORN
    values = {"{port}": str(port), "{app}": app, "{workers}": str(workers)}
    return [values.get(part, part) for part in template]


def start_server(name: str, server: str, app: str, env: dict[str, str], workdir: Path, workers: int = 1) -> Process:
    port = free_port()
    command = server_command(server, app, port, workers)
    proc = _spawn(name, command, env, workdir)
    proc.port = port
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            break
        if _healthy(port):
            return proc
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{name} ({server}) did not start:\n{proc.log()}")


def _healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False
