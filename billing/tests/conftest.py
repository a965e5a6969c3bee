"""Fixtures of the billing tests: the in-process relay of the routing tests, and the outage tests' own."""

from __future__ import annotations

from billing.tests.outage_fixtures import fake_vendor, journal_dir, postgres, sqlite_file  # noqa: F401
from routing.tests.inprocess import relay, relay_openai, relay_threads_disconnected  # noqa: F401
