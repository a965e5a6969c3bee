"""Tracing's switch: on only when the environment names an OTLP endpoint; off, the SDK is never
imported; on, captured secret headers are always redacted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lib import tracing


def test_router_without_tracing_never_imports_opentelemetry():
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    check = "import sys, siraya_site.asgi; print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    result = subprocess.run([sys.executable, "-c", check], env=environ, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
    ],
)
def test_tracing_is_on_only_when_an_otlp_endpoint_is_set(environ, wanted):
    assert tracing.wanted(environ) is wanted


@pytest.mark.parametrize(
    ("configured", "kept"),
    [("", []), ("x-tenant", ["x-tenant"]), (" authorization , x-tenant", ["authorization", "x-tenant"])],
)
def test_captured_secret_headers_are_redacted_whatever_the_operators_list(configured, kept):
    fields = tracing.sanitized_headers(configured).split(",")
    assert fields[: len(kept)] == kept  # the operator's own, first
    assert set(fields) == {*kept, *tracing.SECRET_HEADERS} and len(fields) == len(set(fields))
