from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from billing import recovery
from lib.cli import SubcommandCommand


class Command(SubcommandCommand):
    help = "Usage records: settle those left in progress by router processes that died."

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
