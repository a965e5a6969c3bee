"""Writes that settle the usage records of router processes that died mid-request.

Every router process registers a ``RouterInstance`` and writes a heartbeat; every usage
record names the instance that admitted it. An in-progress record belongs to a dead
process, and is settled as ``interrupted`` at its last checkpoint, when its instance

- stopped cleanly (``stopped_at`` set: whatever it left open will never be settled), or
- ran on this machine under a pid that no longer runs (a SIGKILL; found at once), or
- has written no heartbeat for ``SIRAYA_INSTANCE_STALE_SECONDS`` (another machine), or
- is unknown (no instance row) and the record is older than that same bound.

A process never settles its own records this way, so several processes sharing one
database cannot mark each other's live requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from billing import journal
from billing.models import RouterInstance, UsageRecord, UsageStatus
from billing.settlement import Outcome, usage_record_settle
from lib import process

INTERRUPTED_MESSAGE = "The router process stopped before the request finished; billed at its last checkpoint."
# Stopped or dead instance rows with no open record are deleted after this long.
_INSTANCE_RETENTION = timedelta(days=1)


def router_instance_register(now: datetime | None = None) -> str:
    now = now or timezone.now()
    RouterInstance.objects.update_or_create(
        id=process.instance_id(),
        defaults={
            "hostname": process.hostname(),
            "pid": process.pid(),
            "started_at": now,
            "heartbeat_at": now,
            "stopped_at": None,
        },
    )
    return process.instance_id()


def router_instance_heartbeat(now: datetime | None = None) -> None:
    now = now or timezone.now()
    if not RouterInstance.objects.filter(id=process.instance_id()).update(heartbeat_at=now):
        router_instance_register(now)  # the row was deleted (by hand, or a test flush)


def router_instance_stop(now: datetime | None = None) -> None:
    RouterInstance.objects.filter(id=process.instance_id()).update(stopped_at=now or timezone.now())


@dataclass(frozen=True, slots=True)
class Reconciled:
    generation_id: str
    tokens_delivered: int
    instance_id: str


def _instance_dead(instance: RouterInstance, now: datetime, stale: timedelta) -> bool:
    if instance.stopped_at is not None:
        return True
    if instance.hostname == process.hostname() and not process.pid_alive(instance.pid):
        return True
    return instance.heartbeat_at < now - stale


def dead_instance_ids(now: datetime, stale: timedelta) -> tuple[set[str], set[str]]:
    """Return (dead instance ids, unknown instance ids) among owners of in-progress records."""
    owners = set(
        UsageRecord.objects.filter(status=UsageStatus.IN_PROGRESS).values_list("instance_id", flat=True).distinct()
    )
    owners.discard(process.instance_id())
    known = {i.id: i for i in RouterInstance.objects.filter(id__in=owners)}
    dead = {i for i, instance in known.items() if _instance_dead(instance, now, stale)}
    return dead, owners - known.keys()


def usage_records_reconcile(now: datetime | None = None, stale_seconds: float | None = None) -> list[Reconciled]:
    """Settle as ``interrupted`` every in-progress record whose process is dead (see the module doc).

    First, the writes a dead process kept in its journal through a database outage are
    replayed (``billing.journal``): its records are settled as they ended, not as interrupted."""
    journal.orphans_replay()
    now = now or timezone.now()
    stale = timedelta(seconds=settings.SIRAYA_INSTANCE_STALE_SECONDS if stale_seconds is None else stale_seconds)
    dead, unknown = dead_instance_ids(now, stale)
    records = UsageRecord.objects.filter(status=UsageStatus.IN_PROGRESS, instance_id__in=dead)
    orphans = UsageRecord.objects.filter(
        status=UsageStatus.IN_PROGRESS, instance_id__in=unknown, created_at__lt=now - stale
    )
    settled = [_settle(record, now) for record in [*records, *orphans]]
    _forget_instances(now)
    return [r for r in settled if r is not None]


def _settle(record: UsageRecord, now: datetime) -> Reconciled | None:
    last = record.checkpoint_at or record.created_at
    outcome = Outcome(
        status=UsageStatus.INTERRUPTED,
        error_code="router_interrupted",
        error_message=INTERRUPTED_MESSAGE,
        vendor_prompt_tokens=record.vendor_prompt_tokens,
        # The first checkpoint stored the locally counted prompt; before it, nothing is known.
        prompt_tokens=record.prompt_tokens,
        delivered_tokens=record.tokens_delivered,
        duration_ms=max(0, int((last - record.created_at).total_seconds() * 1000)),
        deployment_id=record.deployment_id,
        vendor_id=record.vendor_id,
        vendor_name=record.vendor_name,
        upstream_model=record.upstream_model,
        attempts=record.attempts,
    )
    usage_record_settle(record.pk, outcome)
    # Another process reconciling at the same moment may have settled it first; either way it is settled once.
    if UsageRecord.objects.filter(pk=record.pk, status=UsageStatus.INTERRUPTED).exists():
        return Reconciled(record.generation_id, record.tokens_delivered, record.instance_id)
    return None


def _forget_instances(now: datetime) -> None:
    open_owners = UsageRecord.objects.filter(status=UsageStatus.IN_PROGRESS).values("instance_id")
    RouterInstance.objects.filter(heartbeat_at__lt=now - _INSTANCE_RETENTION).exclude(id__in=open_owners).delete()
