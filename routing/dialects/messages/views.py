"""``POST /v1/messages/count_tokens``: the router's count of a Messages prompt for a model."""

from __future__ import annotations

import orjson
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from lib import tokens
from routing.api import key_authenticated
from routing.dialects.messages.dialect import Messages
from routing.dialects.messages.request import parse_count_request
from routing.errors import REFUSALS, RouterError, UnknownModel, WrongModelMode, client_error
from routing.models import ModelMode
from routing.routes import model_route_cached

_DIALECT = Messages()


@csrf_exempt  # an API key, no cookies
def count_tokens(request: HttpRequest) -> HttpResponse:
    """Answer ``{"input_tokens": N}``: the prompt counted with the model's tokenizer, as the router bills it."""
    try:
        if request.method != "POST":
            raise RouterError(405, "Use POST for /v1/messages/count_tokens.", code="method_not_allowed")
        authenticate(request)
        model, messages, tools = parse_count_request(request.body)
        route = model_route_cached(model)
        if route is None:
            raise UnknownModel(model)
        if route.mode != ModelMode.CHAT:
            raise WrongModelMode(model, route.mode)  # as a Messages request to it is refused
        body = {"input_tokens": tokens.count_messages(messages, route.encoding, tools)}
        return HttpResponse(orjson.dumps(body), content_type="application/json")
    except (RouterError, *REFUSALS) as refused:
        error = client_error(refused)
        response = HttpResponse(_DIALECT.error_body(error), status=error.status, content_type="application/json")
        for name, value in error.headers.items():
            response[name] = value
        return response


def authenticate(request: HttpRequest) -> None:
    """Raise ``KeyRefused`` unless the request carries a usable key (``x-api-key`` or ``Authorization``)."""
    key_authenticated(_DIALECT.authorization(lambda name: request.headers.get(name.decode(), "")))
