"""Fixtures of the billing tests: the in-process relay of the routing tests."""

from __future__ import annotations

from routing.tests.inprocess import relay, relay_openai, relay_threads_disconnected  # noqa: F401
