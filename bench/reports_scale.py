"""Time every report page over 10 million usage records on PostgreSQL: ``python -m bench.reports_scale``.

Creates its own database (``siraya_scale`` on 127.0.0.1:5432, dropped at the end unless ``--keep``;
``--reuse`` times an existing one again), fills ``--records`` usage records spread evenly over
``--days`` days up to now (12 keys, 4 models, 3 vendors, 6 deployments, 4 statuses, 3 error codes)
with one INSERT ... SELECT FROM generate_series per million rows (the secondary indexes are
built afterwards), builds the rollups with ``usage_rollups_refresh`` (timed), then requests every
report page as a staff user through Django's test client: one warm-up, then the median of
``--runs``. Exports are timed to their first chunk (the first 2,000 rows). Stops by itself: every
statement has a timeout, and the whole run is cut off after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

DATABASE = "siraya_scale"
SERVER = "postgres://postgres@127.0.0.1:5432"
KEYS = 12
# (model, vendor, upstream model): the deployments, several per model.
DEPLOYMENTS = (
    ("openai/gpt-4o", "openai", "gpt-4o"),
    ("openai/gpt-4o", "azure", "gpt-4o-eu"),
    ("anthropic/claude-sonnet", "bedrock", "claude-sonnet"),
    ("openai/gpt-4o-mini", "openai", "gpt-4o-mini"),
    ("openai/gpt-4o-mini", "azure", "gpt-4o-mini-eu"),
    ("meta/llama-70b", "bedrock", "llama3-70b"),
)
CHUNK = 1_000_000


def _admin_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def _database_exists() -> bool:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone() is not None


def _setup_django(statement_timeout_ms: int) -> None:
    os.environ["DATABASE_URL"] = f"{SERVER}/{DATABASE}"
    os.environ.setdefault("SIRAYA_VAR_DIR", f"/tmp/siraya-reports-scale-{os.getuid()}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "siraya_site.settings")
    import django
    from django.conf import settings

    django.setup()
    settings.DATABASES["default"]["OPTIONS"] = {"options": f"-c statement_timeout={statement_timeout_ms}"}
    settings.ALLOWED_HOSTS = ["*"]


def _cast() -> tuple[list[int], list[int]]:
    """The staff user, the keys and the deployments; return the key and deployment ids."""
    from django.contrib.auth.models import User

    from billing.services import api_key_create
    from routing.models import Deployment, RouterModel, Vendor

    User.objects.create_user("operator", password="pw", is_staff=True, is_superuser=True)
    keys = [api_key_create(f"team-{i:02d}")[0].pk for i in range(KEYS)]
    deployments = []
    for model_name, vendor_name, upstream in DEPLOYMENTS:
        model, _ = RouterModel.objects.get_or_create(name=model_name)
        vendor, _ = Vendor.objects.get_or_create(name=vendor_name, defaults={"kind": "openai"})
        deployments.append(Deployment.objects.create(model=model, vendor=vendor, upstream_model=upstream))
    return keys, [d.pk for d in deployments]


_FILL = """
INSERT INTO billing_usagerecord (
    generation_id, api_key_id, model_id, model_name, vendor_id, vendor_name, deployment_id, upstream_model,
    status, streamed, http_status, error_code, error_message, finish_reason,
    prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, usage_source, tokens_delivered, instance_id,
    input_price, output_price, cached_input_price, reasoning_price, request_price, cost, reserved_cost,
    attempts, created_at, first_token_ms, duration_ms, finished_at)
SELECT 'gen-scale-' || lpad(i::text, 9, '0'), k, d.model_id, m.name, d.vendor_id, v.name, d.id, d.upstream_model,
    s, r1 < 0.8, CASE WHEN s = 'error' THEN 502 ELSE 200 END,
    CASE WHEN s = 'error' THEN (ARRAY['upstream_error', 'timeout', 'rate_limited'])[1 + floor(r4 * 3)::int]
         ELSE '' END, '', '',
    p, c, floor(p * r2 / 4)::int, 0, 'vendor', c, '',
    2.5, 10, 1.25, 0, 0, round(p * 0.0000025 + c * 0.00001, 8), 0,
    CASE WHEN r4 < 0.03 THEN '[{}, {}]'::jsonb ELSE '[{}]'::jsonb END,
    at, ft, ft + dur, at + make_interval(secs => (ft + dur) / 1000.0)
FROM (
    SELECT i, r1, r2, r3, r4,
        %(start)s::timestamptz + (i - 1) * %(step)s::interval AS at,
        (%(keys)s::int[])[1 + floor(r1 * r1 * %(nkeys)s)::int] AS k,
        (%(deployments)s::int[])[1 + floor(r2 * %(ndeployments)s)::int] AS dep,
        CASE WHEN r3 < 0.90 THEN 'completed' WHEN r3 < 0.95 THEN 'cancelled'
             WHEN r3 < 0.99 THEN 'error' ELSE 'interrupted' END AS s,
        floor(50 + r4 * 4000)::int AS p, floor(r1 * r4 * 1500)::int AS c,
        floor(150 + r2 * r4 * 3000)::int AS ft, floor(r3 * 25000)::int AS dur
    FROM (SELECT i, random() r1, random() r2, random() r3, random() r4
          FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i) AS g
) AS x
JOIN routing_deployment d ON d.id = x.dep
JOIN routing_routermodel m ON m.id = d.model_id
JOIN routing_vendor v ON v.id = d.vendor_id
"""


def _fill(records: int, days: int, now: datetime) -> float:
    """Insert the records; return the seconds taken (with the indexes rebuilt)."""
    from django.db import connection

    from billing.models import UsageRecord

    keys, deployments = _cast()
    started = time.monotonic()
    indexes = list(UsageRecord._meta.indexes)
    with connection.schema_editor() as editor:
        for index in indexes:
            editor.remove_index(UsageRecord, index)
    start = now - timedelta(days=days)
    step = timedelta(days=days) / records
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")
        cursor.execute("SELECT setseed(0.17)")
        for first in range(1, records + 1, CHUNK):
            last = min(first + CHUNK - 1, records)
            cursor.execute(
                _FILL,
                {
                    "start": start,
                    "step": f"{step.total_seconds()} seconds",
                    "keys": keys,
                    "nkeys": len(keys),
                    "deployments": deployments,
                    "ndeployments": len(deployments),
                    "first": first,
                    "last": last,
                },
            )
            print(f"  {last:,} records", file=sys.stderr, flush=True)
        with connection.schema_editor() as editor:
            for index in indexes:
                editor.add_index(UsageRecord, index)
        cursor.execute("VACUUM ANALYZE billing_usagerecord")
    return time.monotonic() - started


def _rollup(now: datetime) -> float:
    from django.db import connection

    from billing.rollups import usage_rollups_refresh

    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")
    usage_rollups_refresh(now)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # as autovacuum would have: the planner's row estimates
    return time.monotonic() - started


def _pages(today: str, key_id: int) -> list[tuple[str, str, dict[str, str]]]:
    """(label, path, query) of every page timed."""
    ninety = (datetime.fromisoformat(today) - timedelta(days=89)).date().isoformat()
    return [
        ("overview, 7 days", "/usage/overview/", {}),
        ("overview, 30 days", "/usage/overview/", {"range": "30d"}),
        ("usage, today (by hour)", "/usage/", {"range": "today"}),
        ("usage, 7 days (default)", "/usage/", {}),
        ("usage, 30 days", "/usage/", {"range": "30d"}),
        ("usage, 90 days (custom)", "/usage/", {"range": "custom", "start": ninety, "end": today}),
        ("usage, 30 days, one key", "/usage/", {"range": "30d", "key": str(key_id)}),
        ("usage, 30 days, one model", "/usage/", {"range": "30d", "model": "openai/gpt-4o"}),
        ("usage, 30 days, errors", "/usage/", {"range": "30d", "status": "error"}),
        ("usage, 30 days, error code", "/usage/", {"range": "30d", "error_code": "timeout"}),
        ("generation log, ID prefix", "/usage/", {"range": "30d", "generation": "gen-scale-0099999"}),
        ("performance, 7 days", "/usage/performance/", {}),
        ("performance, 30 days", "/usage/performance/", {"range": "30d"}),
        ("admin API keys (spend)", "/admin/billing/apikey/", {}),
    ]


def _time(call: Callable[[], Any], runs: int) -> float:
    call()  # warm-up: caches, connection, query plans
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def _deep_cursor(today: str) -> str:
    """The generation log's cursor 9,950 records into the last 30 days (one OFFSET query, not timed)."""
    from billing.models import UsageRecord
    from reports.generations import cursor_text

    start = datetime.fromisoformat(today).replace(tzinfo=UTC) - timedelta(days=29)
    records = UsageRecord.objects.filter(created_at__gte=start).order_by("-created_at", "-pk")
    return cursor_text(records[9_949])


def _first_chunk(client: Any, path: str, query: dict[str, str]) -> None:
    async def read() -> None:
        response = await client.get(path, query)
        assert response.status_code == 200, response.status_code
        chunks = aiter(response.streaming_content)
        await anext(chunks)
        await chunks.aclose()

    asyncio.run(read())


def _export(client: Any, path: str) -> Callable[[], None]:
    return lambda: _first_chunk(client, path, {"range": "30d"})


def _measure(runs: int) -> list[tuple[str, float]]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import AsyncClient, Client

    from billing.models import ApiKey, UsageRecord

    staff = User.objects.get(username="operator")
    client = Client()
    client.force_login(staff)
    async_client = AsyncClient()
    async_client.force_login(staff)
    today = datetime.now(UTC).date().isoformat()
    key_id = ApiKey.objects.order_by("pk").values_list("pk", flat=True)[0]

    def page(path: str, query: dict[str, str]) -> Callable[[], Any]:
        def get() -> None:
            response = client.get(path, query)
            assert response.status_code == 200, (path, query, response.status_code)

        return get

    results = [(label, _time(page(path, query), runs)) for label, path, query in _pages(today, key_id)]
    # The generation log 9,950 records deep (where page 200 was): the cursor of the record before it.
    deep = _deep_cursor(today)
    results.append(
        ("usage, 30 days, generations 9,950 deep", _time(page("/usage/", {"range": "30d", "before": deep}), runs))
    )
    generation = UsageRecord.objects.order_by("-created_at").values_list("generation_id", flat=True)[0]
    results.append(("one generation", _time(page(f"/usage/generations/{generation}/", {}), runs)))
    for label, path in (
        ("CSV export, 30 days, first chunk", "/usage/export.csv"),
        ("JSON export", "/usage/export.json"),
    ):
        results.append((label, _time(_export(async_client, path), runs)))
    connection.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="time the kept database again (no fill, no rollup)")
    parser.add_argument("--max-seconds", type=int, default=3600, help="stop the whole run after this long")
    parser.add_argument("--statement-timeout", type=int, default=120, help="seconds any one page query may take")
    args = parser.parse_args()
    signal.alarm(args.max_seconds)  # SIGALRM ends the process: the run is bounded whatever happens
    began = time.monotonic()
    reuse = args.reuse and _database_exists()
    if not reuse:
        _admin_sql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        _admin_sql(f"CREATE DATABASE {DATABASE}")
    _setup_django(args.statement_timeout * 1000)
    try:
        from django.core.management import call_command
        from django.db import connection

        now = datetime.now(UTC)
        if not reuse:
            call_command("migrate", verbosity=0, interactive=False)
            print(f"fill: {_fill(args.records, args.days, now):.0f} s", flush=True)
            print(f"rollups built from scratch: {_rollup(now):.1f} s", flush=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM billing_usagerecord")
            records = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM billing_usagehour")
            hours = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM billing_usageday")
            days = cursor.fetchone()[0]
        print(f"{records:,} usage records, {hours:,} hourly and {days:,} daily rollup rows", flush=True)
        results = _measure(args.runs)
        print(f"\n| page | median of {args.runs} (ms) |\n|---|---:|")
        for label, ms in results:
            print(f"| {label} | {ms:.0f} |")
        print(f"\nwhole run: {time.monotonic() - began:.0f} s")
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            _admin_sql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


if __name__ == "__main__":
    main()
