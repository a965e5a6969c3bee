"""Small helpers the JSON API views share: key authentication and OpenAI-shaped errors."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from billing.selectors import KeyInfo, api_key_cached, api_key_check, api_key_load, authorization_hash
from routing.errors import RouterError


def error_response(error: RouterError) -> JsonResponse:
    response = JsonResponse(error.body(), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


def api_view(methods: tuple[str, ...] = ("GET",)) -> Callable[..., Any]:
    """Authenticate the API key and turn ``RouterError`` into an OpenAI-shaped response."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise RouterError(405, f"Use {' or '.join(methods)} for {request.path}.", code="method_not_allowed")
                key_hash = authorization_hash(request.headers.get("Authorization", ""))
                hit, info = api_key_cached(key_hash)
                key = api_key_check(info if hit else api_key_load(key_hash))
                return view(request, key, *args, **kwargs)
            except RouterError as error:
                return error_response(error)

        wrapper.csrf_exempt = True  # type: ignore[attr-defined]  # bearer-token API, no cookies
        return wrapper

    return decorate


__all__ = ["KeyInfo", "api_view", "error_response"]
