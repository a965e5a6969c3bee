"""Writes of the billing domain that people make: API keys. (A request's admission and
settlement are the ledger's: ``billing.ledger``.)"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import User
from django.utils import timezone

from billing import keys
from billing.models import ApiKey
from billing.selectors import api_key_cache_forget
from lib.ids import generation_id


def generation_id_new() -> str:
    """A new generation id (``lib.ids``: time-ordered, 64 random bits)."""
    return generation_id()


def api_key_create(
    name: str,
    *,
    owner: User | None = None,
    credit_limit: Decimal | None = None,
    limit_reset: str = "never",
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; return it with its plaintext, which is never stored."""
    plaintext = keys.generate()
    api_key = ApiKey.objects.create(
        name=name,
        owner=owner,
        prefix=keys.display_prefix(plaintext),
        key_hash=keys.hash_key(plaintext),
        credit_limit=credit_limit,
        limit_reset=limit_reset,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        expires_at=expires_at,
    )
    return api_key, plaintext


def api_key_revoke(api_key: ApiKey, now: datetime | None = None) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now or timezone.now())
    api_key_cache_forget(api_key.key_hash)


def api_key_enable(api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=None)
    api_key_cache_forget(api_key.key_hash)
