"""A failing write in a group-committed batch undoes only itself; the others commit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import IntegrityError, connection
from django.db.models import Count, Q, Sum

from billing.admission import Admission
from billing.credit import Ask, ask_worst_case
from billing.errors import CreditExceeded, CreditTerms
from billing.models import ApiKey, KeyUsageDay, UsageRecord, UsageStatus
from billing.selectors import KeyInfo, api_key_load
from billing.services import api_key_create, generation_id_new
from billing.settlement import Outcome
from billing.tests.admitting import admit as admit_request
from billing.tests.admitting import settle as settle_record
from billing.writer import GroupWriter
from routing.selectors import model_route
from routing.services import model_create, vendor_create

MESSAGES = [{"role": "user", "content": "hi"}]


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
        raise CreditExceeded(CreditTerms(Decimal(1), "never", Decimal(0), Decimal(1), None))

    outcomes = _run_batch([rename("first"), duplicate, refuse, rename("last")])

    assert [kind for kind, _ in outcomes] == ["ok", "error", "error", "ok"]
    assert isinstance(outcomes[1][1], IntegrityError)
    assert isinstance(outcomes[2][1], CreditExceeded)
    assert ApiKey.objects.get(pk=key.pk).name == "last"
    assert ApiKey.objects.filter(name="made-then-refused").count() == 1  # a refusal keeps what it wrote
    assert ApiKey.objects.filter(name="dup").count() == 0


def test_batch_without_failures_commits_every_write(transactional_db):
    outcomes = _run_batch([lambda i=i: api_key_create(f"k{i}")[0].pk for i in range(5)])
    assert all(kind == "ok" for kind, _ in outcomes)
    assert ApiKey.objects.filter(name__startswith="k").count() == 5


@pytest.fixture
def priced(transactional_db):
    vendor = vendor_create("acme", "openai", "http://127.0.0.1:1/v1", credentials={"api_key": "sk-x"})
    return model_create("acme/m", deployments=[(vendor, "m", 0, 1)], input_price=Decimal(1), output_price=Decimal(2))


def _info(api_key: ApiKey) -> KeyInfo:
    info = api_key_load(api_key.key_hash)
    assert info is not None
    return info


def _admit(info: KeyInfo) -> Callable[[], Admission]:
    return lambda: admit_request(info, "acme/m", False, generation_id_new(), Ask(MESSAGES, None, 100))


def _settle(admission: Admission, completion: int) -> Callable[[], Decimal]:
    outcome = Outcome(status=UsageStatus.COMPLETED, vendor_prompt_tokens=10, vendor_completion_tokens=completion)
    return lambda: settle_record(admission.record_id, outcome)


def _days_equal_records(api_key: ApiKey) -> None:
    records = UsageRecord.objects.filter(api_key=api_key).aggregate(
        n=Count("id"), p=Sum("prompt_tokens"), c=Sum("completion_tokens"), cost=Sum("cost")
    )
    days = KeyUsageDay.objects.filter(api_key=api_key).aggregate(
        n=Sum("requests"), p=Sum("prompt_tokens"), c=Sum("completion_tokens"), cost=Sum("cost")
    )
    assert records == days


def test_settlements_of_a_batch_add_up_on_their_day_row(priced):
    api_key, _ = api_key_create("k")
    other, _ = api_key_create("other")
    info, other_info = _info(api_key), _info(other)
    admitted = _run_batch([_admit(info), _admit(other_info), _admit(info)])
    outcomes = _run_batch([_settle(a, 5 + i) for i, (_, a) in enumerate(admitted)])
    assert [kind for kind, _ in outcomes] == ["ok"] * 3
    day = KeyUsageDay.objects.get(api_key=api_key)
    assert (day.requests, day.prompt_tokens, day.completion_tokens) == (2, 20, 5 + 7)
    assert day.cost == outcomes[0][1] + outcomes[2][1]
    _days_equal_records(api_key)
    _days_equal_records(other)


def test_admission_counts_what_its_batch_settled_before_it(priced):
    """Spend settled earlier in the same group commit counts against the limit of a later admission."""
    api_key, _ = api_key_create("k", credit_limit=Decimal("0.0042"))
    info = _info(api_key)
    first = _run_batch([_admit(info)])[0][1]
    # 10 prompt + 2000 completion tokens: $0.00401; the $0.00019 left no longer covers a worst case of about $0.0002.
    outcomes = _run_batch([_settle(first, 2000), _admit(info)])
    assert outcomes[0] == ("ok", Decimal("0.00401"))
    kind, refusal = outcomes[1]
    assert kind == "error" and isinstance(refusal, CreditExceeded)
    _days_equal_records(api_key)


def test_failing_write_in_a_batch_leaves_day_totals_equal_to_the_records(priced):
    api_key, _ = api_key_create("k")
    info = _info(api_key)
    admitted = [a for _, a in _run_batch([_admit(info), _admit(info)])]

    def duplicate() -> None:
        ApiKey.objects.create(name="dup", prefix="p", key_hash=api_key.key_hash)

    outcomes = _run_batch([_settle(admitted[0], 3), duplicate, _settle(admitted[1], 4)])
    assert [kind for kind, _ in outcomes] == ["ok", "error", "ok"]
    assert KeyUsageDay.objects.get(api_key=api_key).requests == 2
    _days_equal_records(api_key)


# A group commit locks each key's row once, with its first write of the key, and keeps it to
# the commit: its later writes of the key skip the statement (billing.hotsql.key_locks_kept).


def _limited(api_key_name: str, worst_cases: float) -> KeyInfo:
    route = model_route("acme/m")
    assert route is not None
    worst = ask_worst_case(route, Ask(MESSAGES, None, 100))
    api_key, _ = api_key_create(api_key_name, credit_limit=(worst * Decimal(worst_cases)).quantize(Decimal("1e-8")))
    return _info(api_key)


def _in_thread(run: Callable[[], Any]) -> Callable[[], Any]:
    """``run`` on a thread of its own (its own connection, so its own transactions)."""
    done: list[Any] = []

    def body() -> None:
        try:
            done.append(run())
        finally:
            connection.close()

    thread = threading.Thread(target=body)
    thread.start()

    def result() -> Any:
        thread.join(60)
        assert not thread.is_alive()
        return done[0]

    return result


def test_a_batch_holds_a_key_locked_from_its_first_write_of_it_to_its_commit(priced):
    """Another writer's admission of the key waits for the batch and sees both of its holds."""
    info = _limited("k", 2.5)
    locked = threading.Event()

    def pause() -> None:
        locked.set()
        time.sleep(0.5)  # the other writer's admission starts now, and must wait for the commit

    first = _in_thread(lambda: _run_batch([_admit(info), pause, _admit(info)]))
    assert locked.wait(30)
    second = _in_thread(lambda: _run_batch([_admit(info)]))
    assert [kind for kind, _ in first()] == ["ok"] * 3
    [(kind, refusal)] = second()
    assert kind == "error" and isinstance(refusal, CreditExceeded)


def test_concurrent_batches_never_hold_and_spend_past_the_key_limit(priced):
    info = _limited("k", 6.5)
    in_progress = Q(status=UsageStatus.IN_PROGRESS)
    committed = {
        "spent": Sum("cost", filter=~in_progress, default=Decimal(0)),
        "held": Sum("reserved_cost", filter=in_progress, default=Decimal(0)),
    }

    def writer() -> tuple[int, int, Decimal]:
        admitted: list[Admission] = []
        count = refused = 0
        most = Decimal(0)
        for i in range(12):
            works: list[Callable[[], Any]] = [_admit(info), _admit(info)]
            if admitted:  # settle first or last: the key is locked by a settlement or an admission
                works.insert(0 if i % 2 else 2, _settle(admitted.pop(0), 5))
            for _, value in _run_batch(works):
                if isinstance(value, Admission):
                    admitted.append(value)
                    count += 1
                refused += isinstance(value, CreditExceeded)
            figures = UsageRecord.objects.filter(api_key_id=info.id).aggregate(**committed)  # one snapshot
            most = max(most, figures["spent"] + figures["held"])
        _run_batch([_settle(admission, 5) for admission in admitted])
        return count, refused, most

    results = [result() for result in [_in_thread(writer) for _ in range(3)]]
    limit = ApiKey.objects.get(pk=info.id).credit_limit
    assert all(most <= limit for _, _, most in results)
    assert sum(refused for _, refused, _ in results) > 0 and sum(n for n, _, _ in results) > 0
    _days_equal_records(ApiKey.objects.get(pk=info.id))
