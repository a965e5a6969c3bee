"""A router process killed mid-stream: its record is settled as interrupted at the last checkpoint."""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.cost import Prices, TokenCounts, cost_compute
from billing.models import RouterInstance, UsageRecord, UsageStatus
from billing.recovery import usage_records_reconcile
from billing.services import api_key_create
from conftest import make_cast, wait_settled
from lib import tokens
from routing.tests.sse_client import RawStream, content_of
from routing.tests.test_commands import manage

MESSAGES = [{"role": "user", "content": "Tell me a long story about a cat."}]
PRICES = Prices(Decimal(1), Decimal(2), Decimal(1), Decimal(2), Decimal(0))


def open_stream(cast):
    return RawStream(cast.url, cast.key, {"model": cast.model, "messages": MESSAGES, "stream": True})


def wait_checkpoint(generation_id: str, at_least: int, timeout: float = 10.0) -> UsageRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = UsageRecord.objects.get(generation_id=generation_id)
        if record.checkpoint_at is not None and record.tokens_delivered >= at_least:
            return record
        time.sleep(0.02)
    raise AssertionError("no checkpoint was written")


def read_tokens(stream: RawStream, count: int) -> str:
    received = ""
    while received.count(" ") < count:
        received += content_of(stream.next_data())
    return received


@pytest.fixture
def killable(server_factory, fake_openai, transactional_db):
    fake_openai.scenario.tokens = 3000
    fake_openai.scenario.token_delay = 0.02
    server = server_factory({"SIRAYA_CHECKPOINT_SECONDS": "0.3"})
    cast = make_cast(server.url, fake_openai.url + "/v1")
    yield server, cast
    wait_settled()


def test_killed_router_is_settled_as_interrupted_at_its_last_checkpoint(killable, server_factory, fake_openai):
    server, cast = killable
    stream = open_stream(cast)
    read_tokens(stream, 30)
    generation_id = stream.headers["x-generation-id"]
    wait_checkpoint(generation_id, 30)
    server.stop(signal.SIGKILL)
    # From here every live router of the run may settle the record on its heartbeat (the dead
    # pid is seen at once), this test's next router at its start: whoever comes first settles
    # it, once, at the last checkpoint, which the settlement keeps as ``tokens_delivered``.
    checkpoint = UsageRecord.objects.get(generation_id=generation_id)
    assert checkpoint.status in (UsageStatus.IN_PROGRESS, UsageStatus.INTERRUPTED)
    assert 30 <= checkpoint.tokens_delivered < 3000

    server_factory()  # the next start settles the dead process's record (if no one did already)
    record = cast.record(generation_id, timeout=10)
    prompt = tokens.count_messages(MESSAGES, "cl100k_base")
    assert (record.status, record.error_code) == ("interrupted", "router_interrupted")
    assert record.tokens_delivered == checkpoint.tokens_delivered
    assert record.completion_tokens == checkpoint.tokens_delivered
    assert record.prompt_tokens == prompt  # counted by the router at the first checkpoint
    assert record.cost == cost_compute(PRICES, TokenCounts(prompt, checkpoint.tokens_delivered))
    assert record.vendor_name == "fake" and record.finished_at is not None
    stream.close()


def test_live_processes_keep_their_records_and_reconcile_settles_the_dead(killable, server_factory, fake_openai):
    server, cast = killable
    stream = open_stream(cast)
    read_tokens(stream, 10)
    generation_id = stream.headers["x-generation-id"]
    wait_checkpoint(generation_id, 10)

    # A second process starts (no heartbeat during the test, so only the command settles).
    server_factory({"SIRAYA_HEARTBEAT_SECONDS": "600"})
    result = manage("usage", "reconcile")
    assert result.returncode == 0, result.stderr
    assert "0 record(s) settled" in result.stdout
    assert UsageRecord.objects.get(generation_id=generation_id).status == UsageStatus.IN_PROGRESS
    read_tokens(stream, 5)  # and it still streams

    server.stop(signal.SIGKILL)
    delivered = UsageRecord.objects.get(generation_id=generation_id).tokens_delivered
    result = manage("usage", "reconcile")
    assert result.returncode == 0, result.stderr
    if generation_id not in result.stdout:
        # Every live router applies the same rule on its heartbeat (every 5 s): the session's
        # router may have settled the dead process's record a moment before the command ran.
        assert "0 record(s) settled" in result.stdout
        assert UsageRecord.objects.get(generation_id=generation_id).status == UsageStatus.INTERRUPTED
    else:
        assert "1 record(s) settled" in result.stdout
    record = UsageRecord.objects.get(generation_id=generation_id)
    assert (record.status, record.completion_tokens) == ("interrupted", delivered)
    stream.close()


def _in_progress(api_key, instance_id: str, created_ago: float = 0.0, delivered: int = 12) -> UsageRecord:
    now = timezone.now()
    return UsageRecord.objects.create(
        generation_id=f"gen-test-{instance_id}-{created_ago}",
        api_key=api_key,
        model_name="test/fake",
        status=UsageStatus.IN_PROGRESS,
        streamed=True,
        output_price=Decimal(2),
        input_price=Decimal(1),
        prompt_tokens=20,
        tokens_delivered=delivered,
        checkpoint_at=now,
        created_at=now - timedelta(seconds=created_ago),
        instance_id=instance_id,
    )


@pytest.mark.django_db
def test_staleness_rule_for_processes_on_other_machines():
    api_key, _ = api_key_create("k")
    now = timezone.now()
    RouterInstance.objects.create(
        id="fresh", hostname="other-host", pid=1, started_at=now, heartbeat_at=now - timedelta(seconds=5)
    )
    RouterInstance.objects.create(
        id="silent", hostname="other-host", pid=1, started_at=now, heartbeat_at=now - timedelta(seconds=31)
    )
    RouterInstance.objects.create(
        id="stopped", hostname="other-host", pid=1, started_at=now, heartbeat_at=now, stopped_at=now
    )
    fresh = _in_progress(api_key, "fresh")
    silent = _in_progress(api_key, "silent")
    stopped = _in_progress(api_key, "stopped")
    unknown_new = _in_progress(api_key, "nobody", created_ago=5)
    unknown_old = _in_progress(api_key, "nobody", created_ago=40)

    settled = {r.generation_id for r in usage_records_reconcile(now=now, stale_seconds=30)}

    assert settled == {silent.generation_id, stopped.generation_id, unknown_old.generation_id}
    statuses = dict(UsageRecord.objects.values_list("generation_id", "status"))
    assert statuses[fresh.generation_id] == statuses[unknown_new.generation_id] == "in_progress"
    record = UsageRecord.objects.get(pk=silent.pk)
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("interrupted", 20, 12)
    assert record.cost == cost_compute(PRICES, TokenCounts(20, 12))
    # Settling is done once: a second pass changes nothing.
    assert usage_records_reconcile(now=now, stale_seconds=30) == []
