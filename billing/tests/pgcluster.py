"""A throwaway PostgreSQL cluster for outage tests: ``initdb`` in a temporary folder, its own
loopback port, stopped (fast or immediate) and started again at will; never the machine's
shared cluster."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .external import unavailable

_START_SECONDS = 30


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PgCluster:
    """One PostgreSQL server of the test's own (trust authentication, user ``postgres``)."""

    def __init__(self, port: int) -> None:
        bin_dir = _binaries()
        if bin_dir is None:
            unavailable("PostgreSQL's binaries (initdb)")
        assert bin_dir is not None
        self.bin = bin_dir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="siraya-pg-"))
        self.data = self.root / "data"
        # initdb refuses to run as root: the cluster belongs to the postgres user when there is one.
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.log = self.root / "server.log"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/siraya"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, timeout=60, check=check)

    def init(self) -> PgCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        # fsync off: the operating system outlives every stop here, so nothing written is lost
        # (synchronous_commit stays on: an immediate shutdown would lose acknowledged commits).
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                "fsync = off\nfull_page_writes = off\nmax_connections = 50\n"
            )
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "siraya")
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(_START_SECONDS), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (connections terminated, a clean shutdown) or ``immediate`` (a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(_START_SECONDS), "stop", check=False)

    def answers(self) -> bool:
        done = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1", check=False)
        return done.returncode == 0

    def restart(self, mode: str, down_seconds: float) -> None:
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
