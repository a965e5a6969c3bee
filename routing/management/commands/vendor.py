from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from lib.cli import SubcommandCommand
from routing import services
from routing.models import Vendor, VendorKind
from routing.vendors import ADAPTERS


class Command(SubcommandCommand):
    help = "Add, list and disable vendors (upstream accounts)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = self.subcommands(parser)
        add = sub.add_parser("add", help="add a vendor")
        add.add_argument("name")
        add.add_argument("--kind", required=True, choices=VendorKind.values)
        add.add_argument("--base-url", default="")
        add.add_argument("--api-key", default="", help="stored encrypted; never shown again")
        option_names = sorted({o for a in ADAPTERS.values() for o in a.option_names})
        for name in option_names:
            add.add_argument(f"--{name.replace('_', '-')}", dest=f"opt_{name}", default=None, metavar=name.upper())
        # credentials_json comes from --credentials-file, never from the command line itself.
        secret_names = sorted({s for a in ADAPTERS.values() for s in a.secret_names} - {"api_key", "credentials_json"})
        for name in secret_names:
            add.add_argument(f"--{name.replace('_', '-')}", dest=f"secret_{name}", default=None, metavar=name.upper())
        add.add_argument("--credentials-file", default=None, help="JSON file of credentials (service account key)")
        sub.add_parser("list", help="list vendors")
        disable = sub.add_parser("disable", help="stop routing to a vendor")
        disable.add_argument("name")
        sub.add_parser(
            "rotate-key",
            help="re-encrypt every vendor's credentials under the first key of SIRAYA_ENCRYPTION_KEY",
        )

    def handle_add(
        self, name: str, kind: str, base_url: str, api_key: str, credentials_file: str | None, **rest: Any
    ) -> None:
        allowed = ADAPTERS[kind]
        options = {k[4:]: v for k, v in rest.items() if k.startswith("opt_") and v is not None}
        unknown = sorted(set(options) - set(allowed.option_names))
        if unknown:
            raise ValueError(f"--{unknown[0].replace('_', '-')} does not apply to kind '{kind}'")
        credentials: dict[str, Any] = {k[7:]: v for k, v in rest.items() if k.startswith("secret_") and v is not None}
        if api_key:
            credentials["api_key"] = api_key
        if credentials_file:
            try:
                credentials["credentials_json"] = json.loads(Path(credentials_file).read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read --credentials-file: {exc.__class__.__name__}") from None
        vendor = services.vendor_create(name, kind, base_url, options, credentials)
        self.stdout.write(f"vendor {vendor.name} added (kind {vendor.kind})")

    def handle_list(self, **_: Any) -> None:
        for vendor in Vendor.objects.all():
            state = "enabled" if vendor.enabled else "disabled"
            secret = "credentials set" if vendor.credentials_encrypted else "no credentials"
            self.stdout.write(f"{vendor.name}\t{vendor.kind}\t{vendor.base_url or '-'}\t{state}\t{secret}")

    def handle_disable(self, name: str, **_: Any) -> None:
        try:
            services.vendor_disable(name)
        except Vendor.DoesNotExist:
            raise ValueError(f"no vendor named '{name}'") from None
        self.stdout.write(f"vendor {name} disabled")

    def handle_rotate_key(self, **_: Any) -> None:
        count = services.vendor_credentials_rotate()
        self.stdout.write(f"credentials of {count} vendor(s) re-encrypted under the first key")
