"""Small helpers the JSON API views share: key authentication and OpenAI-shaped errors."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from billing.selectors import KeyInfo, api_key_cached, api_key_check, api_key_load, authorization_hash
from lib import tracing
from routing.errors import REFUSALS, RouterError, client_error
from routing.relay import traces


def error_response(error: RouterError) -> JsonResponse:
    response = JsonResponse(error.body(), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


def key_authenticated(authorization: str) -> KeyInfo:
    """The usable key an ``Authorization`` value names (the cache, else the database), named on
    this request's span when tracing is on; or raise ``KeyRefused``. For the API views Django serves."""
    key_hash = authorization_hash(authorization)
    hit, info = api_key_cached(key_hash)
    key = api_key_check(info if hit else api_key_load(key_hash))
    if tracing.ENABLED:
        traces.key_known(key)  # on the Django instrumentation's span of this request
    return key


def api_view(methods: tuple[str, ...] = ("GET",)) -> Callable[..., Any]:
    """Authenticate the API key and turn ``RouterError`` and refusals into an OpenAI-shaped response."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise RouterError(405, f"Use {' or '.join(methods)} for {request.path}.", code="method_not_allowed")
                key = key_authenticated(request.headers.get("Authorization", ""))
                return view(request, key, *args, **kwargs)
            except (RouterError, *REFUSALS) as error:
                return error_response(client_error(error))

        wrapper.csrf_exempt = True  # type: ignore[attr-defined]  # bearer-token API, no cookies
        return wrapper

    return decorate


# Django's own error pages (URL not found, server error, ...): OpenAI-shaped JSON under the
# API prefix, Django's HTML pages everywhere else (admin, reports).
API_PREFIX = "/v1/"


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not _is_api(request):
        return defaults.page_not_found(request, exception)  # type: ignore[arg-type]
    return error_response(RouterError(404, f"Unknown API path '{request.path[:100]}'.", code="not_found"))


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not _is_api(request):
        return defaults.bad_request(request, exception)  # type: ignore[arg-type]
    return error_response(RouterError(400, "The request could not be understood.", code="bad_request"))


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not _is_api(request):
        return defaults.permission_denied(request, exception)  # type: ignore[arg-type]
    return error_response(RouterError(403, "Permission denied.", code="permission_denied"))


def server_error(request: HttpRequest) -> HttpResponse:
    if not _is_api(request):
        return defaults.server_error(request)
    return error_response(RouterError(500, "The router failed to handle this request.", code="router_error"))


__all__ = ["KeyInfo", "api_view", "error_response", "key_authenticated"]
