from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from billing.selectors import KeyInfo
from routing import openapi
from routing.api import api_view
from routing.models import RouterModel


def _per_million(value: object) -> str:
    return format(value, "f")


@api_view()
def models_list(request: HttpRequest, key: KeyInfo) -> JsonResponse:
    """``GET /v1/models``: enabled models with their mode (chat or embedding), context length and
    prices (USD per million tokens)."""
    data = [
        {
            "id": model.name,
            "object": "model",
            "created": int(model.created_at.timestamp()),
            "owned_by": "siraya",
            "mode": model.mode,
            "context_length": model.context_length,
            "pricing": {
                "input": _per_million(model.input_price),
                "output": _per_million(model.output_price),
                "request": _per_million(model.request_price),
                "unit": "USD per million tokens",
            },
        }
        for model in RouterModel.objects.filter(enabled=True).order_by("name")
    ]
    return JsonResponse({"object": "list", "data": data})


def openapi_document(request: HttpRequest) -> JsonResponse:
    """``GET /v1/openapi.json``: the OpenAPI 3.1 document of the public API (no key needed)."""
    return JsonResponse(openapi.openapi_document())
