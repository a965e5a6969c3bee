"""OpenAI chat requests as Bedrock ``Converse`` requests, and ``Converse`` answers as OpenAI choices.

Converse wants alternating ``user`` / ``assistant`` turns of content blocks: system and
developer messages become ``system`` blocks, tool results become ``toolResult`` blocks of a
user turn, and consecutive turns of one role are merged. Parameters Converse has no
equivalent for (seed, penalties, logit_bias, response_format, ...) are not sent.
"""

from __future__ import annotations

from typing import Any

import orjson

from routing.canonical import ChatRequest
from routing.errors import invalid
from routing.vendors.base import Usage, vendor_token_count

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

Block = dict[str, Any]


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(str(stop_reason or ""), "stop")


def converse_request(request: ChatRequest, max_output_tokens: int | None = None) -> dict[str, Any]:
    """Return the Converse body for ``request``; bad or untranslatable input raises a 400.

    ``max_output_tokens`` (the router model's ceiling) becomes ``maxTokens`` when the client set
    no limit: the credit hold assumed it, and the model's own default may be higher.
    """
    system, turns = converse_messages(request.messages)
    body: dict[str, Any] = {"messages": turns}
    if system:
        body["system"] = system
    inference = inference_config(request, max_output_tokens)
    if inference:
        body["inferenceConfig"] = inference
    tools = tool_config(request.params, has_tool_blocks(turns))
    if tools:
        body["toolConfig"] = tools
    return body


def converse_messages(messages: list[dict[str, Any]]) -> tuple[list[Block], list[dict[str, Any]]]:
    system: list[Block] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message["role"]
        if role in ("system", "developer"):
            system.extend({"text": text} for text in _texts(message.get("content"), where) if text)
            continue
        if role == "user":
            converse_role, blocks = "user", _user_blocks(message.get("content"), where)
        elif role == "assistant":
            converse_role, blocks = "assistant", _assistant_blocks(message, where)
        elif role == "tool":
            converse_role, blocks = "user", [_tool_result(message, where)]
        else:
            raise invalid(
                f"'{where}.role' '{role}' is not supported by Bedrock vendors; use 'tool'.",
                f"{where}.role",
                "unsupported_value",
            )
        if turns and turns[-1]["role"] == converse_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": converse_role, "content": blocks})
    return system, turns


def _texts(content: Any, where: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    texts = []
    for j, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise invalid(
                f"'{where}.content[{j}]' must be a text part here.", f"{where}.content[{j}]", "unsupported_value"
            )
        texts.append(part["text"])
    return texts


def _user_blocks(content: Any, where: str) -> list[Block]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[Block] = []
    for j, part in enumerate(content or ()):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), f"{where}.content[{j}]"))
        else:
            raise invalid(
                f"'{where}.content[{j}]' of type {kind!r} is not supported by Bedrock vendors.",
                f"{where}.content[{j}]",
                "unsupported_value",
            )
    return blocks


def _image(image_url: Any, where: str) -> Block:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    head, _, data = url.partition(",") if isinstance(url, str) else ("", "", "")
    mime, _, encoding = head.removeprefix("data:").partition(";")
    if not head.startswith("data:") or encoding != "base64" or mime not in IMAGE_FORMATS or not data:
        raise invalid(
            f"'{where}' must be a base64 data URL (data:image/png;base64,...); "
            "Bedrock vendors cannot fetch image URLs. Formats: png, jpeg, gif, webp.",
            where,
            "unsupported_value",
        )
    # Converse's JSON protocol carries image bytes base64-encoded, as the data URL already is.
    return {"image": {"format": IMAGE_FORMATS[mime], "source": {"bytes": data}}}


def _assistant_blocks(message: dict[str, Any], where: str) -> list[Block]:
    blocks: list[Block] = [{"text": text} for text in _texts(message.get("content"), where) if text]
    for j, call in enumerate(message.get("tool_calls") or ()):
        at = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not call.get("id"):
            raise invalid(f"'{at}' must have an 'id' and a 'function' with a 'name'.", at)
        blocks.append(
            {
                "toolUse": {
                    "toolUseId": str(call["id"]),
                    "name": function["name"],
                    "input": _arguments(function.get("arguments"), f"{at}.function.arguments"),
                }
            }
        )
    return blocks


def _arguments(arguments: Any, where: str) -> Any:
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, str):
        return arguments
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise invalid(f"'{where}' must be a JSON string.", where) from None


def _tool_result(message: dict[str, Any], where: str) -> Block:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise invalid(f"'{where}.tool_call_id' is required for role 'tool'.", f"{where}.tool_call_id", "missing")
    text = "".join(_texts(message.get("content"), where))
    return {"toolResult": {"toolUseId": tool_call_id, "content": [{"text": text}] if text else []}}


def inference_config(request: ChatRequest, max_output_tokens: int | None = None) -> dict[str, Any]:
    params = request.params
    config: dict[str, Any] = {}
    if request.max_tokens or max_output_tokens:
        config["maxTokens"] = request.max_tokens or max_output_tokens
    if params.get("temperature") is not None:
        config["temperature"] = params["temperature"]
    if params.get("top_p") is not None:
        config["topP"] = params["top_p"]
    stop = params.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    return config


def has_tool_blocks(turns: list[dict[str, Any]]) -> bool:
    return any("toolUse" in block or "toolResult" in block for turn in turns for block in turn["content"])


def tool_config(params: dict[str, Any], tool_history: bool) -> dict[str, Any] | None:
    """Return ``toolConfig``; ``tool_choice: none`` drops the tools.

    Converse rejects toolUse / toolResult blocks without a toolConfig, so when the history
    carries them the tools stay (without a toolChoice) even under ``none``.
    """
    specs = [_tool_spec(tool, i) for i, tool in enumerate(params.get("tools") or ())]
    if not specs:
        return None
    choice = params.get("tool_choice")
    if choice == "none":
        return {"tools": specs} if tool_history else None
    config: dict[str, Any] = {"tools": specs}
    converse_choice = _tool_choice(choice)
    if converse_choice:
        config["toolChoice"] = converse_choice
    return config


def _tool_spec(tool: Any, i: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise invalid(f"'tools[{i}]' must be a function tool with a 'name'.", f"tools[{i}]")
    spec: dict[str, Any] = {
        "name": function["name"],
        "inputSchema": {"json": function.get("parameters") or EMPTY_SCHEMA},
    }
    if function.get("description"):
        spec["description"] = function["description"]
    return {"toolSpec": spec}


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None  # the model's default, which is auto; some models accept no toolChoice at all
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return {"tool": {"name": name}}
    raise invalid("'tool_choice' must be 'auto', 'required', 'none' or a named function.", "tool_choice")


def usage_from_converse(usage: Any, vendor_name: str) -> Usage | None:
    """Converse counts cache reads and writes apart from ``inputTokens``; OpenAI's prompt includes them."""
    if not isinstance(usage, dict):
        return None
    cache_read = vendor_token_count(usage.get("cacheReadInputTokens"), vendor_name, "cacheReadInputTokens") or 0
    cache_write = vendor_token_count(usage.get("cacheWriteInputTokens"), vendor_name, "cacheWriteInputTokens") or 0
    input_tokens = vendor_token_count(usage.get("inputTokens"), vendor_name, "inputTokens")
    return Usage(
        prompt_tokens=input_tokens + cache_read + cache_write if input_tokens is not None else None,
        completion_tokens=vendor_token_count(usage.get("outputTokens"), vendor_name, "outputTokens"),
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def converse_choices(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the OpenAI ``choices`` of a Converse answer."""
    message = (payload.get("output") or {}).get("message") or {}
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            arguments = orjson.dumps(use.get("input") if use.get("input") is not None else {}).decode()
            calls.append(
                {
                    "id": use.get("toolUseId"),
                    "type": "function",
                    "function": {"name": use.get("name"), "arguments": arguments},
                }
            )
        elif isinstance(block.get("reasoningContent"), dict):
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if isinstance(text, str):
                reasoning.append(text)
    answer: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        answer["tool_calls"] = calls
    if reasoning:
        answer["reasoning_content"] = "".join(reasoning)
    return [
        {"index": 0, "message": answer, "logprobs": None, "finish_reason": finish_reason(payload.get("stopReason"))}
    ]
