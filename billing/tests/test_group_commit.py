"""The relay's writes are group-committed; every request still leaves exactly one settled record."""

from __future__ import annotations

import asyncio

import httpx

from billing.models import UsageRecord
from conftest import wait_settled


def test_concurrent_requests_each_leave_exactly_one_settled_record(cast):
    """Admissions and settlements are group-committed; none may be lost, merged or left open."""

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            good = {"model": cast.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
            bad = {**good, "model": "no/such-model"}
            return await asyncio.gather(
                *(
                    client.post(cast.url + "/v1/chat/completions", json=body, headers=cast.headers())
                    for body in [good, bad] * 20
                )
            )

    responses = asyncio.run(burst())
    assert sorted(r.status_code for r in responses) == [200] * 20 + [404] * 20
    ids = [r.headers["x-generation-id"] for r in responses if r.status_code == 200]
    for generation_id in ids:
        assert cast.record(generation_id).status == "completed"
    wait_settled()
    records = UsageRecord.objects.filter(api_key=cast.api_key)
    assert records.count() == 40
    assert sorted(records.values_list("status", flat=True)) == ["completed"] * 20 + ["error"] * 20
