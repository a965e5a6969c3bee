"""Prometheus metrics of the router (``prometheus_client``).

Updates are in-memory increments (a lock and a float add, about a microsecond), made once
per request or per stream open/close, never per chunk. With several processes behind one
scrape target, set ``PROMETHEUS_MULTIPROC_DIR`` (see the README): the same calls then
write to per-process memory-mapped files that ``/metrics`` aggregates.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter(
    "siraya_http_requests_total", "HTTP requests answered, by endpoint and status.", ["endpoint", "status"]
)
STREAMS_OPEN = Gauge("siraya_streams_open", "Chat completion streams being relayed now.", multiprocess_mode="livesum")
TOKENS = Counter("siraya_tokens_total", "Billed tokens, by model and kind (prompt, completion).", ["model", "kind"])
COST = Counter("siraya_cost_usd_total", "Billed cost in USD, by model.", ["model"])
GENERATIONS = Counter("siraya_generations_total", "Settled generations, by model and status.", ["model", "status"])
CANCELLATIONS = Counter("siraya_cancellations_total", "Requests cancelled, by reason.", ["reason"])
REDIS_FAILURES = Counter(
    "siraya_redis_failures_total",
    "Redis calls that failed, by feature and its failure policy (closed: refused; open: carried on).",
    ["feature", "policy"],
)
FIRST_TOKEN = Histogram(
    "siraya_upstream_first_token_seconds",
    "Time from the request's arrival to the vendor's first token, by vendor.",
    ["vendor"],
    buckets=_LATENCY_BUCKETS,
)
DURATION = Histogram(
    "siraya_request_duration_seconds",
    "Time from the request's arrival to its settlement, by vendor.",
    ["vendor"],
    buckets=_LATENCY_BUCKETS,
)

PENDING_WRITES = Gauge(
    "siraya_pending_writes",
    "Writes kept through a database outage and not yet written, by where they wait (memory, journal).",
    ["where"],
    multiprocess_mode="livesum",
)
PENDING_WRITE_AGE = Gauge(
    "siraya_pending_write_age_seconds",
    "Age of the oldest write kept through a database outage (0: none).",
    multiprocess_mode="livemax",
)

# Called before every scrape, to set gauges whose figures live elsewhere (lib knows no app).
_before_scrape: list[Callable[[], None]] = []


def before_scrape(refresh: Callable[[], None]) -> None:
    """Run ``refresh`` before each scrape (once per function, however often it is registered)."""
    if refresh not in _before_scrape:
        _before_scrape.append(refresh)


# Bounded label values: the path of every request is not a label, its endpoint is.
_ENDPOINTS = {
    "/v1/chat/completions": "chat_completions",
    "/v1/chat/completions/": "chat_completions",
    "/v1/messages": "messages",
    "/v1/messages/": "messages",
    "/v1/messages/count_tokens": "messages_count_tokens",
    "/v1/embeddings": "embeddings",
    "/v1/embeddings/": "embeddings",
    "/v1/models": "models",
    "/v1/generation": "generation",
    "/v1/key": "key",
    "/v1/openapi.json": "openapi",
    "/healthz": "healthz",
    "/readyz": "readyz",
    "/metrics": "metrics",
}


def endpoint_of(path: str) -> str:
    found = _ENDPOINTS.get(path)
    if found:
        return found
    return "admin" if path.startswith("/admin/") else "other"


# Labelled children by (metric, labels): ``labels()`` validates and locks on every call; the
# children themselves never change once made, so the relay looks them up here instead.
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        if len(_children) > 10_000:  # bounded, whatever the label values
            _children.clear()
        child = _children[key] = metric.labels(*labels)
    return child


def request_answered(path: str, status: int) -> None:
    _child(REQUESTS, endpoint_of(path), str(status)).inc()


def generation_settled(
    model: str,
    vendor: str,
    status: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost: Decimal,
    first_token_s: float | None,
    duration_s: float,
) -> None:
    _child(GENERATIONS, model, status).inc()
    if prompt_tokens:
        _child(TOKENS, model, "prompt").inc(prompt_tokens)
    if completion_tokens:
        _child(TOKENS, model, "completion").inc(completion_tokens)
    if cost:
        _child(COST, model).inc(float(cost))
    if first_token_s is not None:
        _child(FIRST_TOKEN, vendor or "none").observe(first_token_s)
    _child(DURATION, vendor or "none").observe(duration_s)


def cancelled(reason: str) -> None:
    CANCELLATIONS.labels(reason).inc()


def redis_failed(feature: str, policy: str) -> None:
    _child(REDIS_FAILURES, feature, str(policy)).inc()


def exposition() -> tuple[bytes, str]:
    """Return the metrics text and its content type (aggregated across processes if configured)."""
    for refresh in _before_scrape:
        refresh()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
