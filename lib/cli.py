"""Management-command plumbing: subcommands, one-line errors, no tracebacks."""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser


class OneLineParser(CommandParser):
    def error(self, message: str) -> NoReturn:
        if self.called_from_command_line:
            sys.stderr.write(f"error: {message} (see --help)\n")
            sys.exit(2)
        raise CommandError(f"Error: {message}")


class SubcommandCommand(BaseCommand):
    """A command whose first argument picks a ``handle_<name>`` method."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = OneLineParser
        return parser

    def subcommands(self, parser: CommandParser) -> Any:
        return parser.add_subparsers(dest="action", required=True, parser_class=OneLineParser)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options.pop("action")
        try:
            getattr(self, f"handle_{action.replace('-', '_')}")(**options)
        except (ValueError, LookupError) as exc:
            raise CommandError(str(exc).strip("'\"")) from None


def decimal_arg(value: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"'{value}' is not a number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"'{value}' must be a non-negative number")
    return number
