"""Fixtures of the database-outage tests: a fake vendor, a journal folder, a database of the
test's own (a throwaway PostgreSQL cluster or an SQLite file). Registered in ``conftest``."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port

from .own_database import OwnDatabase

TOKENS = 40  # each answer of the fake vendor, 50 ms apart


@pytest.fixture
def fake_vendor() -> Iterator[Any]:
    from fakevendors.openai import FakeOpenAI

    with FakeOpenAI(tokens=TOKENS, token_delay=0.05) as fake:
        yield fake


@pytest.fixture
def journal_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="siraya-journal-") as folder:
        yield Path(folder)


@pytest.fixture
def postgres() -> Iterator[OwnDatabase]:
    db = OwnDatabase.postgres(free_port())
    yield db
    db.destroy()


@pytest.fixture
def sqlite_file() -> Iterator[OwnDatabase]:
    db = OwnDatabase.sqlite()
    yield db
    db.destroy()
