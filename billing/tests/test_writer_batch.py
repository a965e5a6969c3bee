"""A failing write in a group-committed batch undoes only itself; the others commit."""

from __future__ import annotations

import asyncio
from typing import Any

from django.db import IntegrityError

from billing.models import ApiKey
from billing.services import api_key_create
from billing.writer import GroupWriter
from routing.errors import RouterError


def _run_batch(works: list[Any]) -> list[tuple[str, Any]]:
    loop = asyncio.new_event_loop()
    try:
        futures = [loop.create_future() for _ in works]
        GroupWriter()._commit([(work, loop, future) for work, future in zip(works, futures, strict=True)])
        loop.run_until_complete(asyncio.sleep(0))
        outcomes: list[tuple[str, Any]] = []
        for future in futures:
            error = future.exception()
            outcomes.append(("error", error) if error is not None else ("ok", future.result()))
        return outcomes
    finally:
        loop.close()


def test_failing_write_undoes_only_itself_and_refusals_keep_their_rows(transactional_db):
    key, _ = api_key_create("batch")

    def rename(name: str) -> Any:
        return lambda: ApiKey.objects.filter(pk=key.pk).update(name=name)

    def duplicate() -> None:
        ApiKey.objects.create(name="dup", prefix="p", key_hash=key.key_hash)  # unique key_hash

    def refuse() -> None:
        api_key_create("made-then-refused")
        raise RouterError(402, "no", code="credit_limit_exceeded")

    outcomes = _run_batch([rename("first"), duplicate, refuse, rename("last")])

    assert [kind for kind, _ in outcomes] == ["ok", "error", "error", "ok"]
    assert isinstance(outcomes[1][1], IntegrityError)
    assert isinstance(outcomes[2][1], RouterError)
    assert ApiKey.objects.get(pk=key.pk).name == "last"
    assert ApiKey.objects.filter(name="made-then-refused").count() == 1  # a refusal keeps what it wrote
    assert ApiKey.objects.filter(name="dup").count() == 0


def test_batch_without_failures_commits_every_write(transactional_db):
    outcomes = _run_batch([lambda i=i: api_key_create(f"k{i}")[0].pk for i in range(5)])
    assert all(kind == "ok" for kind, _ in outcomes)
    assert ApiKey.objects.filter(name__startswith="k").count() == 5
