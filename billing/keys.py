"""API key material: generation, hashing, display prefix. Nothing here touches the database."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-siraya-"
_DISPLAY_CHARS = 8


def generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)  # 256 bits of entropy


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).hexdigest()


def display_prefix(plaintext: str) -> str:
    return plaintext[: len(KEY_PREFIX) + _DISPLAY_CHARS]


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
