"""Stored responses: ``store: true`` keeps an answer for its key, ``previous_response_id`` continues one.

An answer is stored after it reached the client, off the event loop, just before its usage
record is settled; so a lookup that misses while the key's record of that id is still in
progress (the client asked again the moment it had the answer) waits for the settlement,
a few milliseconds, and a settled record with no stored response means there is none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import orjson
from channels.db import database_sync_to_async

from billing import outage
from billing.writer import group_committed
from routing.canonical import ChatRequest
from routing.dialects.base import Answer, StreamRenderer
from routing.dialects.responses.items import context_items, stored_items
from routing.dialects.responses.objects import answer_response, generation_of
from routing.dialects.responses.schema import ResponsesRequest, with_context
from routing.dialects.responses.stream import ResponsesStream
from routing.errors import RouterError
from routing.models import StoredResponse
from routing.selectors import stored_response_lookup
from routing.services import stored_response_save

logger = logging.getLogger("siraya.relay")

# How long a lookup waits for a response whose request is still finishing (seconds), and how
# often it looks again meanwhile. A request still streaming its answer outlasts the wait: its
# response is not found yet.
SETTLING_SECONDS = 5.0
POLL_SECONDS = 0.02

_lookup = database_sync_to_async(stored_response_lookup)
# Through the group commit, with the admissions and settlements of other requests: in a
# transaction and a thread call of its own it halved the Responses streams/s (make bench).
_save = group_committed(stored_response_save)


def response_not_found(response_id: str, param: str | None = None) -> RouterError:
    """The one answer for an id the key cannot see: unknown, another key's, deleted or not stored."""
    shown = response_id[:64].replace("\x00", "\\u0000")  # the usage record keeps the message: no NUL
    if param == "previous_response_id":
        message, code = f"Previous response with id '{shown}' not found.", "previous_response_not_found"
    else:
        message, code = f"Response with id '{shown}' not found.", "response_not_found"
    return RouterError(404, message, code=code, param=param)


def stored_response_settled(key_id: int, response_id: str) -> StoredResponse | None:
    """Return the key's stored response of that id (waiting, if its request is still finishing)."""
    deadline = time.monotonic() + SETTLING_SECONDS
    while True:
        found, running = stored_response_lookup(key_id, response_id, generation_of(response_id))
        if found is not None or not running or time.monotonic() > deadline:
            return found
        time.sleep(POLL_SECONDS)


async def stored_response_awaited(key_id: int, response_id: str) -> StoredResponse | None:
    """``stored_response_settled`` for the event loop: the database work in its thread, the waits here."""
    deadline = time.monotonic() + SETTLING_SECONDS
    while True:
        found, running = await outage.within_bound(_lookup(key_id, response_id, generation_of(response_id)))
        if found is not None or not running or time.monotonic() > deadline:
            return found
        await asyncio.sleep(POLL_SECONDS)


def final_response(answer: Answer | None, renderer: StreamRenderer | None) -> dict[str, Any] | None:
    """Return the Response object the client got last (completed, incomplete or failed), if any."""
    if answer is not None:
        return answer_response(answer)
    if isinstance(renderer, ResponsesStream):
        return renderer.final
    return None


class ResponsesMemory:
    async def recall(self, request: ChatRequest, key_id: int) -> ChatRequest:
        assert isinstance(request, ResponsesRequest)
        previous_id = request.previous_response_id
        if previous_id is None:
            return request
        stored = await stored_response_awaited(key_id, previous_id)
        if stored is None:
            raise response_not_found(previous_id, "previous_response_id")
        context = context_items(orjson.loads(stored.input_items), orjson.loads(stored.response))
        return with_context(request, context)

    def keep(
        self, request: ChatRequest, key_id: int, answer: Answer | None, renderer: StreamRenderer | None
    ) -> Awaitable[None] | None:
        assert isinstance(request, ResponsesRequest)
        if not request.store:
            return None
        response = final_response(answer, renderer)
        if response is None:
            return None
        generation_id = generation_of(response["id"])
        try:
            items = stored_items(request.items, generation_id)
            return _logged(_save(key_id, response, [*request.context, *items]), generation_id)
        except Exception:
            logger.exception("could not store the response", extra={"generation_id": generation_id})
            return None


async def _logged(write: Awaitable[Any], generation_id: str) -> None:
    try:
        await write
    except Exception:
        logger.exception("could not store the response", extra={"generation_id": generation_id})
