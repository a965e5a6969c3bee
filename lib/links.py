"""Links into the usage reports from the apps below them (the admin's keys and models), by URL name:
no import of the reports app, which reads from those apps."""

from __future__ import annotations

from django.urls import reverse
from django.utils.http import urlencode


def usage_url(**filters: str | int) -> str:
    """The URL of ``/usage/`` narrowed by ``filters`` (the report's own query parameters: key, model, ...)."""
    return f"{reverse('reports:usage')}?{urlencode(filters)}"
