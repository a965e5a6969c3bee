"""The usual cast of a report test: a staff user, a key owner, an outsider with their own key."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User

from billing.models import ApiKey, UsageRecord, UsageStatus
from billing.services import api_key_create

NOW = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)
_ids = itertools.count(1)


def record(api_key: ApiKey, created_at: datetime = NOW, **fields: Any) -> UsageRecord:
    """Store a settled usage record of ``api_key``."""
    fields.setdefault("model_name", "m/alpha")
    fields.setdefault("vendor_name", "vendor-a")
    fields.setdefault("status", UsageStatus.COMPLETED)
    return UsageRecord.objects.create(
        generation_id=f"gen-test{next(_ids):08d}", api_key=api_key, created_at=created_at, **fields
    )


@dataclass
class People:
    staff: User
    owner: User
    outsider: User
    owner_key: ApiKey
    outsider_key: ApiKey


@pytest.fixture
def people(db: None) -> People:
    staff = User.objects.create_user("operator", password="pw-operator", is_staff=True, is_superuser=True)
    owner = User.objects.create_user("alice", password="pw-alice")
    outsider = User.objects.create_user("mallory", password="pw-mallory")
    owner_key, _ = api_key_create("alice-key", owner=owner)
    outsider_key, _ = api_key_create("mallory-key", owner=outsider)
    return People(staff, owner, outsider, owner_key, outsider_key)


@pytest.fixture
def frozen_now() -> Any:
    import time_machine

    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def money(value: str) -> Decimal:
    return Decimal(value)
