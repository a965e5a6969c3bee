"""A database of a test's own for a live router (a throwaway PostgreSQL cluster or an SQLite
file), so the test can take it away without touching the shared one or the test database.

Set up with ``manage.py`` in a child process (migrations, a fake vendor, a model, a key);
read with the driver directly (the test process's Django stays on the test database).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import ROOT

from .pgcluster import PgCluster

_SETUP = """
from decimal import Decimal
from billing.services import api_key_create
from routing.services import model_create, vendor_create
vendor = vendor_create("fake", "openai", {vendor_url!r}, credentials={{"api_key": "sk-vendor-secret-for-tests"}})
model_create("test/fake", deployments=[(vendor, "fake-model", 0, 1)], input_price=Decimal(1), output_price=Decimal(2))
_, plaintext = api_key_create("outage", credit_limit=Decimal(100))
print(plaintext)
"""


class OwnDatabase:
    def __init__(self, url: str, cluster: PgCluster | None = None, path: Path | None = None) -> None:
        self.url = url
        self.cluster = cluster
        self.path = path

    @classmethod
    def postgres(cls, port: int) -> OwnDatabase:
        cluster = PgCluster(port).init()
        return cls(cluster.url, cluster=cluster)

    @classmethod
    def sqlite(cls) -> OwnDatabase:
        path = Path(tempfile.mkdtemp(prefix="siraya-sqlite-")) / "router.sqlite3"
        return cls(f"sqlite:///{path}", path=path)

    def manage(self, *argv: str, env: dict[str, str] | None = None) -> str:
        environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "siraya_site.settings", "DATABASE_URL": self.url}
        done = subprocess.run(
            [sys.executable, "manage.py", *argv],
            cwd=ROOT,
            env={**environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def prepare(self, vendor_url: str) -> str:
        """Migrate, create the fake vendor, model ``test/fake`` and a key; return the key."""
        self.manage("migrate", "--noinput", "-v0")
        return self.manage("shell", "-c", _SETUP.format(vendor_url=vendor_url)).strip().splitlines()[-1]

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.path is not None:
            with sqlite3.connect(self.path, timeout=30) as db:
                return db.execute(sql).fetchall()
        import psycopg

        with psycopg.connect(self.url, connect_timeout=5) as db:
            return db.execute(sql).fetchall()  # type: ignore[arg-type]

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold SQLite's write lock (as a long VACUUM or a backup would) for the block."""
        assert self.path is not None
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()

    def destroy(self) -> None:
        if self.cluster is not None:
            self.cluster.destroy()
        if self.path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self.path.parent.rmdir()
