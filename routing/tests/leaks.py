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
    # Open and idle in the router's keep-alive pool (an answer read to its end, its final chunk
    # arrived with [DONE], returns its connection there): reuse, not a leak. Each holds one fd;
    # ``vendor_idle`` are those to this fake vendor.
    upstream_idle: int = 0
    vendor_idle: int = 0

    def within(self, before: Snapshot) -> bool:
        return (
            self.fds - self.upstream_idle <= before.fds - before.upstream_idle
            and self.tasks <= before.tasks
            and self.running == 0
            and self.vendor_connections - self.vendor_idle <= before.vendor_connections - before.vendor_idle
        )


def snapshot(url: str, pid: int, fake) -> Snapshot:
    debug = httpx.get(url + "/debug/tasks", timeout=5).json()
    # The debug request itself is one task while it runs.
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    idle: dict[str, int] = debug["upstream_idle"]
    vendor_idle = idle.get(f"{fake.host}:{fake.port}", 0)
    return Snapshot(fds, debug["tasks"] - 1, debug["running"], fake.open_connections, sum(idle.values()), vendor_idle)


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
