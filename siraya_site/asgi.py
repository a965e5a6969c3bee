"""ASGI entry point: the relay handles chat completions, Django everything else.

Tracing (``lib.tracing``) starts here, once per process, when the environment names an OTLP
endpoint; Django's pages (admin, reports) are then traced by OpenTelemetry's Django
instrumentation, whose middleware must be in place before the application is built.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from lib import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "siraya_site.settings")
if tracing.setup():
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    DjangoInstrumentor().instrument(tracer_provider=tracing.provider())
django_application = get_asgi_application()

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.db import connections  # noqa: E402

from ops import http_errors  # noqa: E402
from routing.relay.entry import router_application  # noqa: E402  (needs Django set up)

if settings.SIRAYA_SERVE_STATIC:
    # daphne serves no static files itself: serve /static/ (admin CSS, Chart.js) through the
    # staticfiles finders whatever DEBUG says.
    django_application = ASGIStaticFilesHandler(django_application)

http_errors.install()


def _close_view_connections(**kwargs: object) -> None:
    """Close the database connections of the Django request that just finished.

    Django runs each request's synchronous views in a thread of that request's own
    (``ThreadSensitiveContext``), so a persistent connection (``CONN_MAX_AGE``) is never used
    again and stays open until its thread's objects are collected: a run of API calls to Django
    views (``/v1/key``, stored responses) used up PostgreSQL's connections. The relay does not go
    through Django's handler and keeps its own.
    """
    connections.close_all()


signals.request_finished.connect(_close_view_connections, sender=ASGIHandler, dispatch_uid="close-view-connections")

application = router_application(django_application)
