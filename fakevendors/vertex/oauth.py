"""Google's OAuth2 token endpoint as the fake Vertex checks it: service-account keys and JWT-bearer assertions."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def service_account_key(token_uri: str, project: str = "test-project") -> dict[str, Any]:
    """Return a fresh service-account JSON (a new RSA key each call) pointing at ``token_uri``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": f"router@{project}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbits(64)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def assertion_problem(form: dict[str, str], public_key: Any, client_email: str) -> str | None:
    """Return why the JWT-bearer grant's assertion is refused, or None if it is good."""
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
        return "Unsupported grant type."
    try:
        header_b64, payload_b64, signature_b64 = form["assertion"].split(".")
        header, claims = orjson.loads(_b64decode(header_b64)), orjson.loads(_b64decode(payload_b64))
        signature = _b64decode(signature_b64)
    except (KeyError, ValueError):
        return "Malformed JWT assertion."
    if header.get("alg") != "RS256" or public_key is None:
        return "Unsupported JWT algorithm."
    try:
        signing_input = f"{header_b64}.{payload_b64}".encode()
        public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "Invalid JWT Signature."
    now = time.time()
    if claims.get("iss") != client_email:
        return "Invalid issuer."
    if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE or SCOPE not in str(claims.get("scope", "")).split():
        return "Invalid audience or scope."
    if not claims.get("iat", now + 999) <= now + 60 < claims.get("exp", 0) + 60:
        return "Invalid JWT: token is expired or not yet valid."
    return None
