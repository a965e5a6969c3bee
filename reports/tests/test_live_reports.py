"""Reports served by the real daphne router: static files, and a large CSV streamed in bounded memory."""

from __future__ import annotations

import csv
import io
import tracemalloc
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User

from billing.models import UsageRecord, UsageStatus
from billing.services import api_key_create
from reports import selectors
from reports.views import _csv_chunks

START = datetime(2025, 3, 1, tzinfo=UTC)


def _bulk_records(count: int) -> None:
    api_key, _ = api_key_create("bulk")
    batch = 5000
    for offset in range(0, count, batch):
        UsageRecord.objects.bulk_create(
            UsageRecord(
                generation_id=f"gen-bulk-{i:09d}",
                api_key=api_key,
                model_name=f"m/{i % 4}",
                vendor_name="v",
                status=UsageStatus.COMPLETED,
                prompt_tokens=i % 97,
                completion_tokens=i % 13,
                created_at=START + timedelta(seconds=i),
            )
            for i in range(offset, min(offset + batch, count))
        )


def test_static_files_and_chart_library_are_served_by_the_router(live_router):
    chart = httpx.get(live_router.url + "/static/vendor/chartjs/chart.umd.min.js", timeout=10)
    assert chart.status_code == 200
    assert "Chart.js v4" in chart.text[:200]
    assert httpx.get(live_router.url + "/static/reports/usage.js", timeout=10).status_code == 200
    assert httpx.get(live_router.url + "/static/admin/css/base.css", timeout=10).status_code == 200


@pytest.mark.slow
def test_csv_of_many_rows_streams_over_daphne(live_router, transactional_db):
    count = 30_000
    _bulk_records(count)
    user = User.objects.create(username="operator", is_staff=True)
    user.password = PBKDF2PasswordHasher().encode("pw-operator-123", "salt1234", iterations=1000)
    user.save()

    with httpx.Client(base_url=live_router.url, timeout=60) as client:
        login = client.get("/accounts/login/")
        token = login.cookies["csrftoken"]
        client.post(
            "/accounts/login/",
            data={"username": "operator", "password": "pw-operator-123", "csrfmiddlewaretoken": token},
            headers={"Referer": live_router.url + "/accounts/login/"},
        )
        query = {"range": "custom", "start": "2025-03-01", "end": "2025-03-02"}
        with client.stream("GET", "/usage/export.csv", params=query) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/csv"
            assert "content-length" not in response.headers  # streamed, not built first
            pieces = list(response.iter_raw())
    text = b"".join(pieces).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(selectors.CSV_COLUMNS)
    assert len(rows) == count + 1
    assert rows[1][0] == f"gen-bulk-{count - 1:09d}"  # newest first
    assert len(pieces) > 10


def _peak_memory_of_export(query) -> tuple[int, int]:
    """Consume the CSV export of ``query``; return (CSV bytes, peak bytes traced meanwhile)."""

    async def consume() -> int:
        size = 0
        async for piece in _csv_chunks(query):
            size += len(piece)
        return size

    tracemalloc.start()
    try:
        size = async_to_sync(consume)()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return size, peak


@pytest.mark.slow
def test_csv_export_memory_does_not_grow_with_the_number_of_rows(db):
    _bulk_records(24_000)
    everything = selectors.csv_rows_query(UsageRecord.objects.all())
    a_quarter = selectors.csv_rows_query(UsageRecord.objects.filter(created_at__lt=START + timedelta(seconds=6_000)))

    small_size, small_peak = _peak_memory_of_export(a_quarter)
    large_size, large_peak = _peak_memory_of_export(everything)

    assert large_size > 3.9 * small_size
    # Rows are held one batch at a time: four times the rows, about the same peak.
    assert large_peak < 1.25 * small_peak, (small_peak, large_peak)
    assert large_peak < large_size * 2, (large_peak, large_size)
