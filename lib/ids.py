"""Generation ids: ``gen-`` + the time in milliseconds (hex) + 64 random bits.

Time-ordered, so ids sort roughly by creation. The random part comes from ``os.urandom`` (as
``secrets`` does) read 8 KiB at a time: one system call per 1,024 ids instead of one per id,
which showed in the relay's profile.
"""

from __future__ import annotations

import os
import threading
import time

_POOL_BYTES = 8192
_pool = b""
_at = _POOL_BYTES
_lock = threading.Lock()


def generation_id() -> str:
    global _pool, _at
    with _lock:
        if _at >= _POOL_BYTES:
            _pool, _at = os.urandom(_POOL_BYTES), 0
        random_part = _pool[_at : _at + 8]
        _at += 8
    return f"gen-{int(time.time() * 1000):011x}{random_part.hex()}"
