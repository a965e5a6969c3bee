"""Migrate a fresh benchmark database and add the fake vendor, the benchmark's models and a key.

Run as ``python -m bench.prepare <vendor base url>`` with ``DATABASE_URL`` and ``SIRAYA_VAR_DIR``
set; prints ``{"key": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal

# Upstream model ids the fake vendor understands (see fakevendors.openai): router model -> upstream.
MODELS = {
    "bench/complete": "fake?tokens=16",
    "bench/stream": "fake?tokens=64",
    "bench/hold": "fake?tokens=2&hang_after=1",
    "bench/cancel": "fake?tokens=40&token_delay=0.05",
}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "siraya_site.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from billing.services import api_key_create
    from routing.services import model_create, vendor_create

    call_command("migrate", verbosity=0, interactive=False)
    vendor = vendor_create("fake", "openai", sys.argv[1], credentials={"api_key": "sk-bench-vendor"})
    for name, upstream in MODELS.items():
        model_create(name, deployments=[(vendor, upstream, 0, 1)], input_price=Decimal("1"), output_price=Decimal("2"))
    _, key = api_key_create("bench")
    print(json.dumps({"key": key}))


if __name__ == "__main__":
    main()
