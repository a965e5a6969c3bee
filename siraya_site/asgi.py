"""ASGI entry point: the relay handles chat completions, Django everything else."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "siraya_site.settings")
django_application = get_asgi_application()

from ops import http_errors  # noqa: E402
from routing.relay.entry import router_application  # noqa: E402  (needs Django set up)

http_errors.install()

application = router_application(django_application)
