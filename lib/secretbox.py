"""Encryption of vendor credentials at rest (Fernet, with rotation through MultiFernet)."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBoxError(Exception):
    pass


@lru_cache(maxsize=4)
def _box(keys: str) -> MultiFernet:
    try:
        return MultiFernet([Fernet(k.strip().encode()) for k in keys.split(",") if k.strip()])
    except (ValueError, TypeError) as exc:
        raise SecretBoxError("SIRAYA_ENCRYPTION_KEY is not a valid Fernet key list") from exc


def encrypt_json(keys: str, value: dict[str, Any]) -> str:
    return _box(keys).encrypt(json.dumps(value).encode()).decode()


def decrypt_json(keys: str, token: str) -> dict[str, Any]:
    if not token:
        return {}
    try:
        return json.loads(_box(keys).decrypt(token.encode()))
    except InvalidToken:
        raise SecretBoxError("stored credentials cannot be decrypted with SIRAYA_ENCRYPTION_KEY") from None


def rotate(keys: str, token: str) -> str:
    """Re-encrypt ``token`` under the first (newest) key."""
    if not token:
        return token
    try:
        return _box(keys).rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretBoxError("stored credentials cannot be decrypted with SIRAYA_ENCRYPTION_KEY") from None
