"""Login throttling (django-axes) as the router applies it: who the client is, and what a locked-out login sees."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def client_address(request: HttpRequest) -> str | None:
    """Return the client's address as the outermost trusted proxy saw it.

    With ``SIRAYA_TRUSTED_PROXY_COUNT`` = N proxies in front, each appending the address it was
    connected from to X-Forwarded-For, the client is the N-th entry from the right (entries left of
    it are whatever the client sent). With none configured, the header is ignored: anyone could
    send one to get a fresh count of attempts.
    """
    count = settings.SIRAYA_TRUSTED_PROXY_COUNT
    if count > 0:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= count:
            return hops[-count]
    return request.META.get("REMOTE_ADDR")


def lockout_response(request: HttpRequest, *args: Any) -> HttpResponse:
    """429 with Retry-After and a page that says why and for how long (axes' AXES_LOCKOUT_CALLABLE)."""
    minutes = settings.SIRAYA_LOGIN_COOLOFF_MINUTES
    # The admin login page's look and name (the template extends it), as for /accounts/login/.
    context = {
        "cooloff_minutes": math.ceil(minutes),
        "site_header": admin.site.site_header,
        "site_title": admin.site.site_title,
    }
    response = render(request, "registration/locked_out.html", context, status=429)
    response["Retry-After"] = str(math.ceil(minutes * 60))
    response["Cache-Control"] = "no-store"
    return response
