"""Input items as a stored response keeps them, and their pages as ``input_items`` lists them.

OpenAI answers ``GET /v1/responses/{id}/input_items`` with every item in its full form: each has
an ``id`` and a ``status``, a message's content is a list of parts (``input_text`` for the user,
system and developer, ``output_text`` for the assistant). Items the client sent with an id keep it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routing.dialects.responses.objects import output_text

# Each input item type's id prefix.
_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
MAX_PAGE = 100
DEFAULT_PAGE = 20


def stored_items(items: list[dict[str, Any]], generation_id: str) -> list[dict[str, Any]]:
    """Return a request's own input items in their full form, each with an id."""
    suffix = generation_id.removeprefix("gen-")
    return [_full(item, f"{_PREFIX.get(item['type'], 'item')}_{suffix}_in{index}") for index, item in enumerate(items)]


def _full(item: dict[str, Any], new_id: str) -> dict[str, Any]:
    full = {**item, "id": item["id"] if isinstance(item.get("id"), str) and item["id"] else new_id}
    if item["type"] == "message":
        full["content"] = _parts(item["role"], item["content"])
    if item["type"] != "reasoning":
        full.setdefault("status", "completed")
    return full


def _parts(role: str, content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not isinstance(content, str):
        return content
    return [output_text(content)] if role == "assistant" else [{"type": "input_text", "text": content}]


def context_items(stored_input: list[dict[str, Any]], response: dict[str, Any]) -> list[dict[str, Any]]:
    """Return what a response continuing ``response`` starts from: its input items, then its output."""
    return [*stored_input, *(response.get("output") or [])]


class PageError(ValueError):
    """A list parameter out of range: ``param`` names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def page_of(
    items: list[dict[str, Any]], *, limit: int, order: str, after: str | None, before: str | None
) -> dict[str, Any]:
    """Return one page of ``items`` (kept oldest first) as OpenAI's list object."""
    ordered = items if order == "asc" else items[::-1]
    ids = [item["id"] for item in ordered]
    start, end = 0, len(ordered)
    if after:
        start = _position(ids, after, "after") + 1
    if before:
        end = _position(ids, before, "before")
    window = ordered[start:end]
    page = window[:limit] if not before or after else window[-limit:]
    more = len(window) > len(page)
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": more,
    }


def _position(ids: list[str], item_id: str, param: str) -> int:
    try:
        return ids.index(item_id)
    except ValueError:
        raise PageError(f"No input item '{item_id[:64]}' in this response.", param) from None


def page_params(query: Mapping[str, str]) -> dict[str, Any]:
    """Return ``page_of``'s keyword arguments from a query string, or raise ``PageError``."""
    raw_limit = query.get("limit") or str(DEFAULT_PAGE)
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise PageError(f"'limit' must be an integer between 1 and {MAX_PAGE}; got {raw_limit[:20]!r}.", "limit")
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise PageError(f"'order' must be 'asc' or 'desc'; got {order[:20]!r}.", "order")
    return {"limit": limit, "order": order, "after": query.get("after") or None, "before": query.get("before") or None}
