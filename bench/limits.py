"""Process limits the benchmark needs (thousands of sockets per process)."""

from __future__ import annotations

import resource


def raise_open_files(wanted: int = 65536) -> int:
    """Raise RLIMIT_NOFILE's soft limit as far as the hard limit allows; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
