"""Pieces of OpenAI chat messages that both Vertex dialects read the same way."""

from __future__ import annotations

from typing import Any

import orjson

from routing.errors import RouterError, invalid


def text_of(content: Any) -> str:
    """Return the text of a message's content (a string or an array of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def parts_of(content: Any, where: str) -> list[dict[str, Any]]:
    """Return the content as a list of OpenAI parts (a string becomes one text part)."""
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    for j, part in enumerate(content):
        if part.get("type") not in ("text", "image_url"):
            raise unsupported(f"{where}.content[{j}]", f"content part type '{part.get('type')}'")
    return list(content)


def image_source(part: dict[str, Any], where: str) -> tuple[str, str, str]:
    """Return ("data", mime, base64) for a data URL or ("url", mime, url) for a link."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise invalid(f"'{where}.image_url.url' must be a string.", f"{where}.image_url")
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if encoding != "base64" or not data:
            raise invalid(f"'{where}.image_url.url' must be a base64 data URL or a link.", f"{where}.image_url")
        return "data", mime or "image/png", data
    extension = url.rsplit("?", 1)[0].rsplit(".", 1)[-1].lower()
    mime = {"png": "image/png", "gif": "image/gif", "webp": "image/webp"}.get(extension, "image/jpeg")
    return "url", mime, url


def tool_arguments(call: dict[str, Any], where: str) -> dict[str, Any]:
    """Parse an assistant tool call's JSON arguments into an object."""
    raw = (call.get("function") or {}).get("arguments") or "{}"
    try:
        value = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise invalid(f"'{where}.function.arguments' must be a JSON object.", f"{where}.function.arguments")
    return value


def tool_names(messages: list[dict[str, Any]]) -> dict[str, str]:
    """Map each assistant tool-call id to its function name."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and call.get("id"):
                names[str(call["id"])] = str((call.get("function") or {}).get("name") or "")
    return names


def function_tools(tools: Any) -> list[dict[str, Any]]:
    """Return the ``function`` objects of OpenAI tools; other tool types are refused."""
    functions = []
    for i, tool in enumerate(tools or ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise unsupported(f"tools[{i}]", "tools other than functions")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise invalid(f"'tools[{i}].function.name' is required.", f"tools[{i}].function.name", "missing")
        functions.append(function)
    return functions


def named_tool(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise invalid("'tool_choice.function.name' is required.", "tool_choice.function.name", "missing")
        return name
    return None


def stop_sequences(stop: Any) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def unsupported(param: str, what: str) -> RouterError:
    return invalid(f"Vertex AI does not support {what} here ('{param}').", param, "unsupported_value")
