from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from lib.cli import SubcommandCommand, decimal_arg
from routing import services
from routing.models import ModelMode, RouterModel, Vendor


def _deployment(spec: str) -> tuple[str, str, int, int]:
    """Parse ``VENDOR:UPSTREAM_ID[:priority[:weight]]``."""
    parts = spec.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"--deployment '{spec}' must look like VENDOR:UPSTREAM_ID[:priority[:weight]]")
    numbers = parts[2:4]
    if len(parts) > 4 or not all(n.isdigit() for n in numbers):
        raise ValueError(f"--deployment '{spec}': priority and weight must be whole numbers")
    priority = int(numbers[0]) if numbers else 0
    weight = int(numbers[1]) if len(numbers) > 1 else 1
    return parts[0], parts[1], priority, weight


class Command(SubcommandCommand):
    help = "Add and list models."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = self.subcommands(parser)
        add = sub.add_parser("add", help="add a model")
        add.add_argument("name")
        add.add_argument("--vendor", help="vendor serving the model")
        add.add_argument("--upstream-model", default=None, help="the vendor's model id (default: NAME)")
        add.add_argument("--deployment", action="append", default=[], metavar="VENDOR:UPSTREAM_ID[:PRIORITY[:WEIGHT]]")
        add.add_argument("--input-price", default="0", help="USD per million input tokens")
        add.add_argument("--output-price", default="0", help="USD per million output tokens")
        add.add_argument("--cached-input-price", default=None, help="USD per million cached input tokens")
        add.add_argument("--reasoning-price", default=None, help="USD per million reasoning tokens")
        add.add_argument("--request-price", default="0", help="USD per request")
        add.add_argument("--context-length", type=int, default=None)
        add.add_argument("--max-output-tokens", type=int, default=None)
        add.add_argument("--encoding", choices=["o200k_base", "cl100k_base"], default="")
        add.add_argument(
            "--mode",
            choices=ModelMode.values,
            default=ModelMode.CHAT,
            help="chat (chat completions, Messages, Responses; the default) or embedding (/v1/embeddings)",
        )
        sub.add_parser("list", help="list models")

    def handle_add(
        self, name: str, vendor: str | None, upstream_model: str | None, deployment: list[str], **opts: Any
    ) -> None:
        specs = [_deployment(s) for s in deployment]
        if vendor:
            specs.insert(0, (vendor, upstream_model or name, 0, 1))
        if not specs:
            raise ValueError("give --vendor or at least one --deployment")
        deployments = []
        for vendor_name, upstream, priority, weight in specs:
            found = Vendor.objects.filter(name=vendor_name).first()
            if found is None:
                raise ValueError(f"no vendor named '{vendor_name}'")
            deployments.append((found, upstream, priority, weight))
        extra: dict[str, Any] = {"encoding": opts["encoding"], "mode": opts["mode"]}
        for field in ("cached_input_price", "reasoning_price"):
            if opts[field] is not None:
                extra[field] = decimal_arg(opts[field])
        if opts["max_output_tokens"] is not None:
            extra["max_output_tokens"] = opts["max_output_tokens"]
        model = services.model_create(
            name,
            deployments=deployments,
            input_price=decimal_arg(opts["input_price"]),
            output_price=decimal_arg(opts["output_price"]),
            request_price=decimal_arg(opts["request_price"]),
            context_length=opts["context_length"],
            **extra,
        )
        self.stdout.write(f"model {model.name} added with {len(deployments)} deployment(s)")

    def handle_list(self, **_: Any) -> None:
        for model in RouterModel.objects.prefetch_related("deployments__vendor"):
            targets = ", ".join(str(d) for d in model.deployments.all())
            state = "enabled" if model.enabled else "disabled"
            price = f"in ${model.input_price.normalize():f} out ${model.output_price.normalize():f} /Mtok"
            self.stdout.write(f"{model.name}\t{model.mode}\t{state}\t{price}\t{targets}")
