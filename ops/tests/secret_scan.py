"""Scan what live routers wrote during a test run (logs, responses) for secrets the run created."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SCANNED_SUFFIXES = (".log", ".responses")


def scan(directory: Path, secrets: Iterable[str], since: float = 0.0) -> list[str]:
    """Return "file: secret prefix" for every secret found in a log or response file written since ``since``."""
    wanted = [s for s in set(secrets) if s]
    if not wanted or not directory.is_dir():
        return []
    leaks = []
    for path in sorted(directory.iterdir()):
        if path.suffix not in SCANNED_SUFFIXES or path.stat().st_mtime < since:
            continue
        data = path.read_bytes()
        for secret in wanted:
            if secret.encode() in data:
                leaks.append(f"{path.name}: {secret[:12]}...")
    return leaks
