"""The Responses request: one declaration that validates bodies, and its mapping onto the canonical request.

Input items become chat messages (``function_call`` items an assistant turn's tool calls,
``function_call_output`` items tool messages); Responses parameters become their chat-completions
names (``max_output_tokens`` -> ``max_completion_tokens``, ``reasoning.effort`` -> ``reasoning_effort``,
``text.format`` -> ``response_format``). What the router cannot do is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from routing.canonical import ChatRequest
from routing.dialects.body import parse_json_object
from routing.dialects.chat.schema import MAX_DEPTH, MAX_MODEL_NAME, MAX_TOKENS, NO_MODEL
from routing.dialects.faults import Invalid, Message
from routing.dialects.fields import Field
from routing.dialects.spec import AnyJson, Array, Boolean, Enum, Integer, Number, Object, OneOf, String, Tagged
from routing.errors import invalid

MAX_ITEMS = 100_000
MAX_RESPONSE_ID = 64  # a generation id is 39 characters
_NO_INPUT: Message = ("'{path}' is required: a string or a non-empty array of input items.", "missing")

# Members the router refuses whatever their value is (a value of null or false is accepted).
_REFUSED = {
    "conversation": "The router does not store conversations: 'conversation' is not supported; "
    "send the whole conversation in 'input'.",
    "background": "Background responses are not supported: send 'background': false or leave it out.",
    "prompt": "Stored prompts are not supported: send 'instructions' and 'input'.",
}

_TEXT = String(errors={"missing": ("'{path}' must be a string.", "invalid_type")})
_PART = Tagged(
    "type",
    {
        "input_text": Object({"text": Field(_TEXT, required=True)}),
        "output_text": Object({"text": Field(_TEXT, required=True)}),
        "refusal": Object({"refusal": Field(_TEXT, required=True)}),
        "input_image": Object({"image_url": String(), "file_id": String(), "detail": Enum({"low", "high", "auto"})}),
    },
)
_MESSAGE = Object(
    {
        "role": Field(Enum({"user", "assistant", "system", "developer"}), required=True),
        "content": Field(OneOf(String(), Array(_PART)), required=True),
    }
)
_ITEM = Tagged(
    "type",
    {
        "message": _MESSAGE,
        "function_call": Object(
            {
                "call_id": Field(String(min_length=1), required=True),
                "name": Field(String(min_length=1), required=True),
                "arguments": Field(String(), required=True),
            }
        ),
        # A previous answer's reasoning, sent back with its output: vendors behind the canonical
        # request take no reasoning items, so it is dropped.
        "reasoning": Object(),
        "function_call_output": Object(
            {
                "call_id": Field(String(min_length=1), required=True),
                "output": Field(OneOf(String(), Array(_PART)), required=True),
            }
        ),
    },
)
_FUNCTION_TOOL = Object(
    {
        "type": Field(Enum({"function"}), required=True),
        "name": Field(String(min_length=1), required=True),
        "description": String(),
        "parameters": Object(),
        "strict": Boolean(),
    }
)
_FORMAT = Tagged(
    "type",
    {
        "text": Object(),
        "json_object": Object(),
        "json_schema": Object(
            {
                "name": Field(String(min_length=1), required=True),
                "schema": Field(Object(), required=True),
                "description": String(),
                "strict": Boolean(),
            }
        ),
    },
)

# Members in the order they are checked: the first fault found is the one reported.
REQUEST = Object(
    {
        "model": Field(
            String(min_length=1, max_length=MAX_MODEL_NAME, errors={"type": NO_MODEL, "missing": NO_MODEL}),
            required=True,
            blank_is_absent=True,
        ),
        "input": Field(
            OneOf(String(min_length=1), Array(min_items=1, max_items=MAX_ITEMS), errors={"missing": _NO_INPUT}),
            required=True,
            blank_is_absent=True,
        ),
        "instructions": String(),
        "stream": Field(Boolean(), default=False),
        "stream_options": Object({"include_obfuscation": Boolean()}, additional=False),
        "max_output_tokens": Integer(1, MAX_TOKENS),
        "temperature": Number(0, 2),
        "top_p": Number(0, 1),
        "tools": Array(),
        "tool_choice": OneOf(Enum({"none", "auto", "required"}), Object()),
        "parallel_tool_calls": Boolean(),
        "reasoning": Object(
            {"effort": Enum({"none", "minimal", "low", "medium", "high", "xhigh"}), "summary": AnyJson()},
            additional=False,
        ),
        "text": Object({"format": _FORMAT, "verbosity": Enum({"low", "medium", "high"})}, additional=False),
        "metadata": Object(description="Echoed in the response, and kept with it when it is stored."),
        "store": Field(
            Boolean(description="Keep the response and its input items for the key (OpenAI's default: true)."),
            default=True,
        ),
        "previous_response_id": String(
            min_length=1,
            max_length=MAX_RESPONSE_ID,
            description="A stored response of the same key: its input and output items come before 'input'.",
        ),
        "user": String(),
        "include": Array(String(), description="Accepted and ignored: the router adds no optional output data."),
        "truncation": Enum({"disabled"}, description="Only 'disabled': the router never drops input items."),
        "service_tier": AnyJson(description="Forwarded to the vendor as sent (OpenAI's meaning)."),
        "top_logprobs": Integer(0, 20),
        **{name: AnyJson(description=why) for name, why in _REFUSED.items()},
    },
    additional=False,
)


@dataclass(eq=False)
class ResponsesRequest(ChatRequest):
    """The canonical request, with what the Responses object echoes back."""

    echo: dict[str, Any] = field(default_factory=dict)
    store: bool = True
    previous_response_id: str | None = None
    instructions: str | None = None
    # The request's own input items as checked (a string input as one user message), and the
    # items of the previous response (its input, then its output) that come before them.
    items: list[dict[str, Any]] = field(default_factory=list)
    context: list[dict[str, Any]] = field(default_factory=list)


def parse_responses_request(body: bytes) -> ResponsesRequest:
    """Return the canonical request of a Responses body, or raise a 400 naming the field."""
    try:
        data = parse_json_object(body, MAX_DEPTH)
        clean = REQUEST.validate(data)
        refuse_unserved(clean)
        messages = input_messages(clean)
        params = chat_params(clean)
    except Invalid as error:
        raise invalid(error.message, error.param, error.code) from None
    return ResponsesRequest(
        model=clean["model"],
        messages=messages,
        stream=clean["stream"],
        include_usage=True,
        max_tokens=clean.get("max_output_tokens"),
        params=params,
        echo=echo(clean),
        store=clean["store"],
        previous_response_id=clean.get("previous_response_id"),
        instructions=clean.get("instructions"),
        items=own_items(clean["input"]),
    )


def own_items(given: str | list[Any]) -> list[dict[str, Any]]:
    """Return the request's input as items: a string is one user message."""
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return [_typed(item) for item in given]


def _typed(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "type": "message"} if "type" not in item else item


def with_context(request: ResponsesRequest, context: list[dict[str, Any]]) -> ResponsesRequest:
    """Return ``request`` continuing a stored response: ``context`` (its input and output items) comes first."""
    clean = {"instructions": request.instructions, "input": [*context, *request.items]}
    try:
        messages = input_messages(clean)
    except Invalid as error:
        raise invalid(error.message, error.param, error.code) from None
    return replace(request, messages=messages, context=context)


def refuse_unserved(clean: dict[str, Any]) -> None:
    for name, message in _REFUSED.items():
        if clean.get(name) not in (None, False, ""):
            raise Invalid(message, name, "unsupported_parameter")


# -- input -> messages ------------------------------------------------------------------------


def input_messages(clean: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the chat messages of ``instructions`` and ``input``."""
    messages: list[dict[str, Any]] = []
    if clean.get("instructions"):
        messages.append({"role": "system", "content": clean["instructions"]})
    given = clean["input"]
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
        return messages
    for index, item in enumerate(given):
        try:
            add_item(messages, _item(item))
        except Invalid as error:
            raise _within(error, f"input[{index}]") from None
    return messages


def _within(error: Invalid, prefix: str) -> Invalid:
    """Return ``error`` of a value checked on its own as the error of the request member at ``prefix``."""
    where = prefix + (f".{error.param}" if error.param else "")
    return Invalid(error.message.replace(f"'{error.param or ''}'", f"'{where}'", 1), where, error.code)


def _item(item: Any) -> dict[str, Any]:
    """Return a checked input item; a message may come without its ``type``, as OpenAI allows."""
    if isinstance(item, dict) and "type" not in item and "role" in item:
        item = {**item, "type": "message"}
    if isinstance(item, dict) and isinstance(kind := item.get("type"), str) and kind not in _ITEM.variants:
        raise Invalid(f"Input items of type '{kind}' are not supported.", "type", "unsupported_value")
    checked: dict[str, Any] = _ITEM.validate(item)
    return checked


def add_item(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    kind = item["type"]
    if kind == "message":
        messages.append({"role": item["role"], "content": _content(item["content"])})
    elif kind == "function_call":
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        last = messages[-1] if messages else None
        # Calls after an assistant message, or after each other, belong to that one assistant turn.
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item["output"]
        text = output if isinstance(output, str) else "".join(p.get("text", "") for p in output)
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})


def _content(content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        if part["type"] not in _PART.variants:
            message = f"Content parts of type '{part['type']}' are not supported."
            raise Invalid(message, f"content[{index}].type", "unsupported_value")
        if part["type"] == "input_image":
            if not part.get("image_url"):
                raise Invalid(
                    "Images by 'file_id' are not supported: send 'image_url'.", "content", "unsupported_value"
                )
            image = {"url": part["image_url"], **({"detail": part["detail"]} if part.get("detail") else {})}
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append({"type": "text", "text": part["refusal"] if part["type"] == "refusal" else part["text"]})
    return parts


# -- parameters -------------------------------------------------------------------------------


def chat_params(clean: dict[str, Any]) -> dict[str, Any]:
    """Return the canonical (chat-completions) parameters of a Responses request."""
    params: dict[str, Any] = {
        name: clean[name]
        for name in ("temperature", "top_p", "parallel_tool_calls", "user", "service_tier", "top_logprobs")
        if clean.get(name) is not None
    }
    if clean.get("max_output_tokens") is not None:
        params["max_completion_tokens"] = clean["max_output_tokens"]
    if clean.get("tools"):
        params["tools"] = [_tool(i, tool) for i, tool in enumerate(clean["tools"])]
    if clean.get("tool_choice") is not None:
        params["tool_choice"] = _tool_choice(clean["tool_choice"])
    if (effort := (clean.get("reasoning") or {}).get("effort")) is not None:
        params["reasoning_effort"] = effort
    text = clean.get("text") or {}
    if text.get("verbosity"):
        params["verbosity"] = text["verbosity"]
    if (response_format := _response_format(text.get("format"))) is not None:
        params["response_format"] = response_format
    return params


def _tool(index: int, tool: Any) -> dict[str, Any]:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if isinstance(kind, str) and kind != "function":
        raise Invalid(
            f"Built-in tools are not supported ('{kind}'): only tools of type 'function'.",
            f"tools[{index}].type",
            "unsupported_value",
        )
    try:
        clean = _FUNCTION_TOOL.validate(tool)
    except Invalid as error:
        raise _within(error, f"tools[{index}]") from None
    function = {k: clean[k] for k in ("name", "description", "parameters", "strict") if clean.get(k) is not None}
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise Invalid(
        '\'tool_choice\' may name only a function: {"type": "function", "name": ...}.',
        "tool_choice",
        "unsupported_value",
    )


def _response_format(given: dict[str, Any] | None) -> dict[str, Any] | None:
    if given is None or given["type"] == "text":
        return None
    if given["type"] == "json_object":
        return {"type": "json_object"}
    schema = {k: given[k] for k in ("name", "schema", "description", "strict") if given.get(k) is not None}
    return {"type": "json_schema", "json_schema": schema}


def echo(clean: dict[str, Any]) -> dict[str, Any]:
    """Return the request's settings as the Response object repeats them."""
    reasoning = clean.get("reasoning") or {}
    return {
        "instructions": clean.get("instructions"),
        "max_output_tokens": clean.get("max_output_tokens"),
        "metadata": clean.get("metadata") or {},
        "parallel_tool_calls": clean.get("parallel_tool_calls", True),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": clean.get("store", True),
        "previous_response_id": clean.get("previous_response_id"),
        "temperature": clean.get("temperature"),
        "text": {"format": (clean.get("text") or {}).get("format") or {"type": "text"}},
        "tool_choice": clean.get("tool_choice") or "auto",
        "tools": clean.get("tools") or [],
        "top_p": clean.get("top_p"),
        "truncation": "disabled",
    }
