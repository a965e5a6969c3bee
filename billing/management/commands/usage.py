from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser
from django.utils import timezone

from billing import journal, recovery, rollups
from lib.cli import SubcommandCommand


class Command(SubcommandCommand):
    help = (
        "Usage records: settle those left in progress by router processes that died, roll them up by hour,"
        " prune old ones; show the writes kept in journals through a database outage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = self.subcommands(parser)
        reconcile = sub.add_parser(
            "reconcile",
            help="settle as 'interrupted' (billed at the last checkpoint) every in-progress record whose process is dead",
        )
        reconcile.add_argument(
            "--stale-seconds",
            type=float,
            default=None,
            help="heartbeat silence after which a process counts as dead (default SIRAYA_INSTANCE_STALE_SECONDS)",
        )
        kept = sub.add_parser(
            "journal",
            help="list the writes kept in journal files (SIRAYA_JOURNAL_DIR) through a database outage",
        )
        kept.add_argument("--replay", action="store_true", help="write dead processes' journals to the database now")
        sub.add_parser("rollup", help="bring the hourly and daily usage rollups up to the current hour")
        prune = sub.add_parser(
            "prune",
            help="delete settled usage records older than N days, after rolling them up (the rollups stay)",
        )
        prune.add_argument(
            "--older-than-days",
            type=int,
            default=None,
            help="age in days of the records to delete (default SIRAYA_USAGE_RETENTION_DAYS)",
        )

    def handle_journal(self, replay: bool, **_: Any) -> None:
        files = journal.journal_files()
        now = time.time()
        for found in files:
            owner = "live process" if found.live else "dead process"
            self.stdout.write(f"{found.path}  ({owner})  {len(found.writes)} pending write(s)")
            for write in found.writes:
                # A reject, an admit, and the writes of a record admitted against the journal: no id yet.
                what = (
                    f"record {write.record_id}"
                    if write.record_id
                    else write.generation_id or write.data["generation_id"]
                )
                self.stdout.write(f"  {write.kind:<10}  {what}  made {now - write.at:.1f} s ago")
        self.stdout.write(f"{sum(len(f.writes) for f in files)} pending write(s) in {len(files)} journal file(s)")
        if replay:
            self.stdout.write(f"{journal.orphans_replay()} write(s) replayed from dead processes' journals")

    def handle_rollup(self, **_: Any) -> None:
        done = rollups.usage_rollups_refresh(timezone.now())
        if done.skipped:
            self.stdout.write("another process is refreshing the rollups; nothing done")
            return
        self.stdout.write(f"{done.hours} hour(s) and {done.days} day(s) rolled up; covered until {done.covered_until}")

    def handle_prune(self, older_than_days: int | None, **_: Any) -> None:
        days = settings.SIRAYA_USAGE_RETENTION_DAYS if older_than_days is None else older_than_days
        pruned = rollups.usage_records_prune(timezone.now(), days)
        self.stdout.write(f"{pruned.records} usage record(s) created before {pruned.before.isoformat()} deleted")

    def handle_reconcile(self, stale_seconds: float | None, **_: Any) -> None:
        if stale_seconds is not None and stale_seconds < 0:
            raise ValueError("--stale-seconds must not be negative")
        settled = recovery.usage_records_reconcile(stale_seconds=stale_seconds)
        for record in settled:
            self.stdout.write(
                f"{record.generation_id}  interrupted  {record.tokens_delivered} delivered tokens"
                f"  (instance {record.instance_id or 'unknown'})"
            )
        self.stdout.write(f"{len(settled)} record(s) settled as interrupted")
