from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from billing import services
from billing.models import ApiKey, LimitReset
from lib.cli import SubcommandCommand, decimal_arg


class Command(SubcommandCommand):
    help = "Create, list and revoke API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = self.subcommands(parser)
        create = sub.add_parser("create", help="create a key; its plaintext is the last line of output")
        create.add_argument("name")
        create.add_argument("--limit", default=None, help="credit limit in USD")
        create.add_argument("--limit-reset", default=LimitReset.NEVER, choices=LimitReset.values)
        create.add_argument("--rpm", type=int, default=None, help="requests per minute")
        create.add_argument("--tpm", type=int, default=None, help="tokens per minute")
        sub.add_parser("list", help="list keys")
        revoke = sub.add_parser("revoke", help="revoke a key by its display prefix")
        revoke.add_argument("prefix")

    def handle_create(
        self, name: str, limit: str | None, limit_reset: str, rpm: int | None, tpm: int | None, **_: Any
    ) -> None:
        for label, value in (("--rpm", rpm), ("--tpm", tpm)):
            if value is not None and value < 1:
                raise ValueError(f"{label} must be a positive integer")
        api_key, plaintext = services.api_key_create(
            name,
            credit_limit=decimal_arg(limit) if limit is not None else None,
            limit_reset=limit_reset,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
        )
        self.stdout.write(
            f"key '{api_key.name}' created (prefix {api_key.prefix}); store it now, it is not shown again:"
        )
        self.stdout.write(plaintext)

    def handle_list(self, **_: Any) -> None:
        for api_key in ApiKey.objects.all():
            state = "revoked" if api_key.revoked_at else "active"
            limit = f"${api_key.credit_limit.normalize():f}" if api_key.credit_limit is not None else "no limit"
            self.stdout.write(f"{api_key.prefix}\t{api_key.name}\t{state}\t{limit}")

    def handle_revoke(self, prefix: str, **_: Any) -> None:
        matches = list(ApiKey.objects.filter(prefix__startswith=prefix, revoked_at__isnull=True)[:2])
        if not matches:
            raise ValueError(f"no active key with prefix '{prefix}'")
        if len(matches) > 1:
            raise ValueError(f"prefix '{prefix}' matches several keys; give more characters")
        services.api_key_revoke(matches[0])
        self.stdout.write(f"key {matches[0].prefix} revoked")
