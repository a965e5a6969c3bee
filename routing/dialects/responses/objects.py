"""The Response object and its output items, built from canonical choices."""

from __future__ import annotations

from typing import Any

from routing.dialects.base import Answer, ClientUsage
from routing.dialects.responses.schema import ResponsesRequest, echo

# Finish reasons that leave a response incomplete, and the reason OpenAI gives for each.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def item_id(kind: str, generation_id: str, index: int) -> str:
    """Return an output item's id: its kind's prefix, the generation, its place in the output."""
    return f"{kind}_{generation_id.removeprefix('gen-')}_{index}"


def usage_body(usage: ClientUsage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def response_id(generation_id: str) -> str:
    """The Response's id, OpenAI's ``resp_`` and the generation id's own part: ``X-Generation-Id``
    and the usage record name the same request as ``gen-`` and the same part."""
    return "resp_" + generation_id.removeprefix("gen-")


def generation_of(response_id: str) -> str:
    """The generation id of the request that made Response ``response_id``."""
    return "gen-" + response_id.removeprefix("resp_")


def response_object(
    generation_id: str,
    created: int,
    model: str,
    echo: dict[str, Any],
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: ClientUsage | None = None,
    finish: str = "",
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the Response object (``status``: in_progress, completed, incomplete or failed)."""
    reason = INCOMPLETE.get(finish) if status == "incomplete" else None
    return {
        "id": response_id(generation_id),
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": reason} if reason else None,
        "model": model,
        "output": output,
        "previous_response_id": None,
        **echo,
        "usage": usage_body(usage),
    }


def final_status(finish: str) -> str:
    return "incomplete" if finish in INCOMPLETE else "completed"


def message_item(
    generation_id: str, index: int, text: str, status: str = "completed", part: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return an assistant message item holding one content part (``output_text`` of ``text`` unless given)."""
    return {
        "type": "message",
        "id": item_id("msg", generation_id, index),
        "status": status,
        "role": "assistant",
        "content": [] if status == "in_progress" else [part or output_text(text)],
    }


def refusal_part(text: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(generation_id: str, index: int, text: str | None) -> dict[str, Any]:
    content = None if text is None else [{"type": "reasoning_text", "text": text}]
    return {"type": "reasoning", "id": item_id("rs", generation_id, index), "summary": [], "content": content}


def call_item(
    generation_id: str, index: int, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id("fc", generation_id, index),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def answer_output(generation_id: str, message: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the output items of a whole answer's message: reasoning, text, then function calls."""
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(generation_id, len(output), reasoning))
    content = message.get("content")
    if isinstance(content, str) and content:
        output.append(message_item(generation_id, len(output), content))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        output.append(message_item(generation_id, len(output), refusal, part=refusal_part(refusal)))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(
            call_item(
                generation_id,
                len(output),
                call.get("id") or "",
                function.get("name") or "",
                function.get("arguments") or "",
            )
        )
    return output


def answer_response(answer: Answer) -> dict[str, Any]:
    """Return the Response object of a whole answer."""
    choice = answer.choices[0] if answer.choices else {}
    finish = choice.get("finish_reason") or ""
    output = answer_output(answer.generation_id, choice.get("message") or {})
    # The request's settings as the object repeats them.
    settings = answer.request.echo if isinstance(answer.request, ResponsesRequest) else echo({})
    return response_object(
        answer.generation_id, answer.created, answer.model, settings,
        status=final_status(finish), output=output, usage=answer.usage, finish=finish,
    )  # fmt: skip
