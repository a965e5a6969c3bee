from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from billing.keys import hash_key
from billing.models import ApiKey
from billing.services import api_key_create
from lib import devsecrets
from routing.models import Deployment, ModelMode, RouterModel, Vendor, VendorKind


class Command(BaseCommand):
    help = "Make sure the built-in demo vendor, the demo/echo and demo/embed models and a demo API key exist."

    def handle(self, *args: Any, **options: Any) -> None:
        from django.conf import settings

        vendor, _ = Vendor.objects.get_or_create(
            name="demo", defaults={"kind": VendorKind.DEMO, "options": {"token_delay": 0.05}}
        )
        model, _ = RouterModel.objects.get_or_create(
            name="demo/echo", defaults={"context_length": 8192, "input_price": "0.50", "output_price": "1.50"}
        )
        Deployment.objects.get_or_create(model=model, vendor=vendor, upstream_model="echo")
        embedder, _ = RouterModel.objects.get_or_create(
            name="demo/embed", defaults={"mode": ModelMode.EMBEDDING, "input_price": "0.02", "output_price": "0"}
        )
        Deployment.objects.get_or_create(model=embedder, vendor=vendor, upstream_model="embed")
        # The demo key's plaintext lives beside the other development secrets, outside git.
        plaintext = devsecrets.read(settings.VAR_DIR, "SIRAYA_DEMO_KEY")
        if (
            plaintext is None
            or not ApiKey.objects.filter(key_hash=hash_key(plaintext), revoked_at__isnull=True).exists()
        ):
            _, plaintext = api_key_create("demo")
            devsecrets.write(settings.VAR_DIR, "SIRAYA_DEMO_KEY", plaintext)
        key_file = settings.VAR_DIR / "demo-api-key"
        key_file.touch(mode=0o600, exist_ok=True)
        key_file.write_text(plaintext + "\n")
        models = "models 'demo/echo' and 'demo/embed' (embeddings)"
        self.stdout.write(f"Demo vendor 'demo', {models}. Demo API key (also in {key_file}):")
        self.stdout.write(plaintext)
