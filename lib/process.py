"""Who this process is: an id that tells one router process from every other, live or dead."""

from __future__ import annotations

import os
import secrets
import socket

_identity: tuple[int, str] | None = None


def instance_id() -> str:
    """Return this process's instance id (a new one after a fork)."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        _identity = (pid, secrets.token_hex(8))
    return _identity[1]


def hostname() -> str:
    return socket.gethostname()[:255]


def pid_alive(pid: int) -> bool:
    """Return whether a process with ``pid`` runs on this machine (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def pid() -> int:
    return os.getpid()
