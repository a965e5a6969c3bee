"""A Messages request body -> the canonical request (OpenAI chat vocabulary).

``system`` becomes a system message, ``tool_use`` blocks an assistant's ``tool_calls``,
``tool_result`` blocks ``tool`` messages, images ``image_url`` parts (base64 sources as data URLs),
documents ``file`` parts (text ones text parts). The validated body itself rides along as
``ChatRequest.claude``: a Claude deployment is sent it as it came, with what the canonical
request cannot carry (thinking signatures, ``cache_control``).
"""

from __future__ import annotations

from typing import Any

import orjson

from routing.canonical import ChatRequest
from routing.dialects.body import parse_json_object
from routing.dialects.faults import Invalid
from routing.dialects.messages.schema import COUNT_REQUEST, MAX_DEPTH, REQUEST
from routing.errors import invalid

# Blocks of earlier turns that other vendors cannot take: Claude's reasoning (its signature).
_DROPPED = frozenset({"thinking", "redacted_thinking"})
# Members of the body that are the request's envelope, not Claude's body (the adapter sets them).
_ENVELOPE = frozenset({"model", "stream"})
# thinking.budget_tokens -> the canonical reasoning_effort (the first bound it stays under).
_EFFORTS = ((4096, "low"), (16384, "medium"))


def parse_messages_request(body: bytes) -> ChatRequest:
    """Return the canonical request of a Messages body, or raise a 400 naming the field."""
    try:
        clean = REQUEST.validate(parse_json_object(body, MAX_DEPTH))
        messages = [*system_messages(clean.get("system")), *chat_messages(clean["messages"])]
    except Invalid as error:
        raise invalid(error.message, error.param, error.code) from None
    return ChatRequest(
        model=clean["model"],
        messages=messages,
        stream=clean["stream"],
        include_usage=True,  # message_delta always carries the usage
        max_tokens=clean["max_tokens"],
        params=parameters(clean),
        top_k=clean.get("top_k"),
        claude={name: value for name, value in clean.items() if name not in _ENVELOPE},
    )


def parse_count_request(body: bytes) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Return the model, canonical messages and tools of a ``count_tokens`` body, or raise a 400."""
    try:
        clean = COUNT_REQUEST.validate(parse_json_object(body, MAX_DEPTH))
        messages = [*system_messages(clean.get("system")), *chat_messages(clean["messages"])]
    except Invalid as error:
        raise invalid(error.message, error.param, error.code) from None
    tools = [tool(t) for t in clean["tools"]] if clean.get("tools") else None
    return clean["model"], messages, tools


def parameters(clean: dict[str, Any]) -> dict[str, Any]:
    """Return the canonical parameters (``routing.canonical.PARAMETERS``) of a validated body."""
    params: dict[str, Any] = {"max_tokens": clean["max_tokens"]}
    for name in ("temperature", "top_p"):
        if clean.get(name) is not None:
            params[name] = clean[name]
    if clean.get("stop_sequences"):
        params["stop"] = clean["stop_sequences"]
    if clean.get("tools"):
        params["tools"] = [tool(t) for t in clean["tools"]]
    if clean.get("tool_choice"):
        params.update(tool_choice(clean["tool_choice"]))
    thinking = clean.get("thinking")
    if thinking and thinking["type"] == "enabled":
        budget = thinking["budget_tokens"]
        params["reasoning_effort"] = next((effort for bound, effort in _EFFORTS if budget < bound), "high")
    user = (clean.get("metadata") or {}).get("user_id")
    if user:
        params["user"] = user
    return params


def tool(spec: dict[str, Any]) -> dict[str, Any]:
    function = {"name": spec["name"], "parameters": spec["input_schema"]}
    if spec.get("description"):
        function["description"] = spec["description"]
    return {"type": "function", "function": function}


def tool_choice(choice: dict[str, Any]) -> dict[str, Any]:
    kind = choice["type"]
    if kind == "tool":
        out: dict[str, Any] = {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    else:
        out = {"tool_choice": {"auto": "auto", "any": "required", "none": "none"}[kind]}
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


def system_messages(system: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if not system:
        return []
    text = system if isinstance(system, str) else "\n\n".join(block["text"] for block in system)
    return [{"role": "system", "content": text}]


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
        elif message["role"] == "assistant":
            out.append(assistant_message(content, i))
        else:
            out += user_messages(content, i)
    return out


def assistant_message(blocks: list[dict[str, Any]], i: int) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            arguments = orjson.dumps(block["input"]).decode()
            calls.append(
                {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}
            )
        elif kind not in _DROPPED:
            raise unsupported_block(kind, i, j, "assistant")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def user_messages(blocks: list[dict[str, Any]], i: int) -> list[dict[str, Any]]:
    """Return a user turn's tool results as ``tool`` messages, then its text and images as one user message."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block["type"]
        if kind == "tool_result":
            text, images = tool_result(block.get("content"), f"messages[{i}].content[{j}].content")
            results.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
            parts += images  # a tool message carries text only: its images follow in the user turn
        elif kind in ("text", "image"):
            parts.append(content_part(block, f"messages[{i}].content[{j}]"))
        elif kind == "document":
            parts += document_parts(block, f"messages[{i}].content[{j}]")
        elif kind not in _DROPPED:
            raise unsupported_block(kind, i, j, "user")
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def tool_result(content: str | list[dict[str, Any]] | None, path: str) -> tuple[str, list[dict[str, Any]]]:
    if content is None or isinstance(content, str):
        return content or "", []
    text = "".join(block["text"] for block in content if block["type"] == "text")
    images = [content_part(block, f"{path}[{k}]") for k, block in enumerate(content) if block["type"] == "image"]
    return text, images


def content_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    if block["type"] == "text":
        return {"type": "text", "text": block["text"]}
    source = block["source"]
    if source["type"] == "url":
        url = source["url"]
    elif source["type"] == "base64":
        url = f"data:{source['media_type']};base64,{source['data']}"
    else:
        where = f"{path}.source.type"
        raise Invalid(f"'{where}' must be 'base64' or 'url'; got {source['type']!r}.", where, "unsupported_value")
    return {"type": "image_url", "image_url": {"url": url}}


def document_parts(block: dict[str, Any], path: str) -> list[dict[str, Any]]:
    """A document as canonical parts: text as text, a file as a ``file`` part (vendors without
    file parts refuse it), a content document as its text and images."""
    source = block["source"]
    kind = source["type"]
    if kind == "text":
        return [{"type": "text", "text": source["data"]}]
    if kind == "content":
        content = source["content"]
        if isinstance(content, str):
            return [{"type": "text", "text": content}]
        return [content_part(part, f"{path}.source.content[{k}]") for k, part in enumerate(content)]
    file: dict[str, Any] = {"filename": block.get("title") or "document"}
    if kind == "base64":
        file["file_data"] = f"data:{source['media_type']};base64,{source['data']}"
    else:
        file["file_url"] = source["url"]
    return [{"type": "file", "file": file}]


def unsupported_block(kind: str, i: int, j: int, role: str) -> Invalid:
    path = f"messages[{i}].content[{j}].type"
    return Invalid(
        f"'{path}': blocks of type {kind!r} are not supported in {role} messages.", path, "unsupported_value"
    )
