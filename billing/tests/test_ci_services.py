"""When CI requires PostgreSQL and Redis, the suite must really run on them, not skip."""

from __future__ import annotations

import os

import pytest
from django.db import connection

from .external import redis_url, services_required


@pytest.mark.skipif(not services_required(), reason="only when SIRAYA_REQUIRE_SERVICES=1")
def test_required_postgresql_run_really_uses_postgresql(db):
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://", "pgsql://")):
        pytest.skip("this run was not asked to use PostgreSQL")
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


@pytest.mark.skipif(not services_required(), reason="only when SIRAYA_REQUIRE_SERVICES=1")
def test_required_redis_is_reachable():
    if not os.environ.get("REDIS_URL"):
        pytest.skip("this run was not asked to use Redis")
    assert redis_url() == os.environ["REDIS_URL"]
