from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from lib.cli import SubcommandCommand
from routing import services
from routing.models import Vendor, VendorKind
from routing.vendors import ADAPTERS
from routing.vendors.base import setting_flag


class Command(SubcommandCommand):
    help = "Add, edit, list and disable vendors (upstream accounts)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = self.subcommands(parser)
        add = sub.add_parser("add", help="add a vendor")
        add.add_argument("name")
        add.add_argument("--kind", required=True, choices=VendorKind.values)
        add.add_argument("--base-url", default="")
        _configuration_arguments(add)
        edit = sub.add_parser(
            "edit",
            help="change a vendor's base URL, options or credentials (a new scheme, host or port needs its "
            "credentials again)",
        )
        edit.add_argument("name")
        edit.add_argument("--base-url", default=None)
        _configuration_arguments(edit)
        edit.add_argument("--remove-credentials", action="store_true", help="drop the stored credentials")
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
        options = _options(kind, rest)
        credentials = _credentials(kind, api_key, credentials_file, rest)
        vendor = services.vendor_create(name, kind, base_url, options, credentials)
        self.stdout.write(f"vendor {vendor.name} added (kind {vendor.kind})")

    def handle_edit(
        self,
        name: str,
        base_url: str | None,
        api_key: str,
        credentials_file: str | None,
        remove_credentials: bool,
        **rest: Any,
    ) -> None:
        try:
            vendor = Vendor.objects.get(name=name)
        except Vendor.DoesNotExist:
            raise ValueError(f"no vendor named '{name}'") from None
        options = {**vendor.options, **_options(vendor.kind, rest)}  # an empty value removes an option
        credentials = _credentials(vendor.kind, api_key, credentials_file, rest)
        if base_url is not None:
            vendor.base_url = base_url
        services.vendor_update(vendor, options=options, credentials=credentials, remove_credentials=remove_credentials)
        self.stdout.write(f"vendor {vendor.name} updated")

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


def _configuration_arguments(parser: CommandParser) -> None:
    """The option and secret flags of every vendor kind (each kind accepts its own)."""
    parser.add_argument("--api-key", default="", help="stored encrypted; never shown again")
    option_names = sorted({o for a in ADAPTERS.values() for o in a.option_names})
    for name in option_names:
        parser.add_argument(
            setting_flag(name), dest=f"opt_{name}", default=None, metavar=name.upper(), help=_option_help(name)
        )
    # credentials_json comes from --credentials-file, never from the command line itself.
    secret_names = sorted({s for a in ADAPTERS.values() for s in a.secret_names} - {"api_key", "credentials_json"})
    for name in secret_names:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=f"secret_{name}", default=None, metavar=name.upper())
    parser.add_argument("--credentials-file", default=None, help="JSON file of credentials (service account key)")


def _option_help(name: str) -> str | None:
    """The option's kinds, choices and default, as the adapters declare them (the admin form shows the same)."""
    kinds = [kind for kind, adapter in ADAPTERS.items() if name in adapter.option_names]
    specs = [ADAPTERS[kind].option_specs[name] for kind in kinds if name in ADAPTERS[kind].option_specs]
    described = specs[0].describe() if specs else ""
    # argparse formats help with %: a literal one must be doubled.
    return f"({', '.join(kinds)}) {described}".strip().replace("%", "%%")


def _options(kind: str, rest: dict[str, Any]) -> dict[str, Any]:
    options = {k[4:]: v for k, v in rest.items() if k.startswith("opt_") and v is not None}
    unknown = sorted(set(options) - set(ADAPTERS[kind].option_names))
    if unknown:
        raise ValueError(f"--{unknown[0].replace('_', '-')} does not apply to kind '{kind}'")
    return options


def _credentials(kind: str, api_key: str, credentials_file: str | None, rest: dict[str, Any]) -> dict[str, Any]:
    """The credentials given on this command line (only these: stored ones are the service's business)."""
    credentials: dict[str, Any] = {k[7:]: v for k, v in rest.items() if k.startswith("secret_") and v is not None}
    unknown = sorted(set(credentials) - set(ADAPTERS[kind].secret_names))
    if unknown:
        raise ValueError(f"--{unknown[0].replace('_', '-')} does not apply to kind '{kind}'")
    if api_key:
        credentials["api_key"] = api_key
    if credentials_file:
        try:
            credentials["credentials_json"] = json.loads(Path(credentials_file).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read --credentials-file: {exc.__class__.__name__}") from None
    return credentials
