"""Development-only secrets, generated once and kept in ``var/`` (outside git)."""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path


def _generate(name: str) -> str:
    if name == "SIRAYA_ENCRYPTION_KEY":
        return base64.urlsafe_b64encode(os.urandom(32)).decode()  # a Fernet key
    return secrets.token_urlsafe(50)


def _path(var_dir: Path) -> Path:
    return var_dir / "dev-secrets.json"


def read(var_dir: Path, name: str) -> str | None:
    path = _path(var_dir)
    return json.loads(path.read_text()).get(name) if path.exists() else None


def write(var_dir: Path, name: str, value: str) -> None:
    path = _path(var_dir)
    var_dir.mkdir(parents=True, exist_ok=True)
    values: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    values[name] = value
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    os.replace(tmp, path)


def dev_secret(var_dir: Path, name: str) -> str:
    """Return the development value of ``name``, creating and storing it on first use."""
    value = read(var_dir, name)
    if value is None:
        value = _generate(name)
        write(var_dir, name, value)
    return value
