"""Leak checks for live-router tests: file descriptors, asyncio tasks, vendor connections."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import httpx

from billing.models import UsageRecord, UsageStatus


@dataclass(frozen=True)
class Snapshot:
    fds: int
    tasks: int
    running: int
    vendor_connections: int

    def within(self, before: Snapshot) -> bool:
        return (
            self.fds <= before.fds
            and self.tasks <= before.tasks
            and self.running == 0
            and self.vendor_connections <= before.vendor_connections
        )


def snapshot(url: str, pid: int, fake) -> Snapshot:
    debug = httpx.get(url + "/debug/tasks", timeout=5).json()
    # The debug request itself is one task while it runs.
    return Snapshot(len(os.listdir(f"/proc/{pid}/fd")), debug["tasks"] - 1, debug["running"], fake.open_connections)


def settle_all(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while UsageRecord.objects.filter(status=UsageStatus.IN_PROGRESS).exists():
        assert time.monotonic() < deadline, "a usage record stayed in progress"
        time.sleep(0.02)


def assert_no_leaks(url: str, pid: int, fake, before: Snapshot, timeout: float = 5.0) -> Snapshot:
    """Wait (bounded) until the router holds no more fds, tasks or vendor connections than ``before``."""
    settle_all()
    deadline = time.monotonic() + timeout
    while True:
        after = snapshot(url, pid, fake)
        if after.within(before):
            return after
        if time.monotonic() > deadline:
            raise AssertionError(f"leak: before {before}, after {after}")
        time.sleep(0.05)
