"""``GET`` and ``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``: a key's stored responses.

Every id the key cannot see (unknown, another key's, deleted, pruned, or answered with
``store: false``) gets the same 404, so the answer tells nothing of other keys' responses.
"""

from __future__ import annotations

import orjson
from django.http import HttpRequest, HttpResponse

from routing.api import KeyInfo, api_view
from routing.dialects.responses.items import PageError, page_of, page_params
from routing.dialects.responses.memory import response_not_found, stored_response_settled
from routing.errors import RouterError
from routing.models import StoredResponse
from routing.services import stored_response_delete


def _json(payload: object) -> HttpResponse:
    return HttpResponse(orjson.dumps(payload), content_type="application/json")


def _stored(key: KeyInfo, response_id: str) -> StoredResponse:
    stored = stored_response_settled(key.id, response_id)
    if stored is None:
        raise response_not_found(response_id)
    return stored


@api_view(methods=("GET", "DELETE"))
def response_detail(request: HttpRequest, key: KeyInfo, response_id: str) -> HttpResponse:
    """The stored Response object, as its client got it; or delete it."""
    stored = _stored(key, response_id)
    if request.method == "DELETE":
        if not stored_response_delete(key.id, stored.id):
            raise response_not_found(response_id)  # deleted meanwhile by another request
        return _json({"id": stored.id, "object": "response", "deleted": True})
    return HttpResponse(stored.response, content_type="application/json")  # as it was sent


@api_view()
def input_items(request: HttpRequest, key: KeyInfo, response_id: str) -> HttpResponse:
    """One page of the stored response's input items (OpenAI's list object)."""
    try:
        params = page_params(request.GET)
        return _json(page_of(orjson.loads(_stored(key, response_id).input_items), **params))
    except PageError as error:
        raise RouterError(400, error.message, code="invalid_value", param=error.param) from None
