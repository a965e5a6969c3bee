from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser
from django.utils import timezone

from lib.cli import SubcommandCommand
from routing.services import stored_responses_prune


class Command(SubcommandCommand):
    help = "Responses API answers stored for their keys (store: true): prune those past the retention."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = self.subcommands(parser)
        prune = sub.add_parser("prune", help="delete stored responses created more than N days ago")
        prune.add_argument(
            "--older-than-days",
            type=int,
            default=None,
            help="age in days of the responses to delete (default SIRAYA_RESPONSES_RETENTION_DAYS)",
        )

    def handle_prune(self, older_than_days: int | None, **_: Any) -> None:
        days = settings.SIRAYA_RESPONSES_RETENTION_DAYS if older_than_days is None else older_than_days
        deleted, before = stored_responses_prune(timezone.now(), days)
        self.stdout.write(f"{deleted} stored response(s) created before {before.isoformat()} deleted")
