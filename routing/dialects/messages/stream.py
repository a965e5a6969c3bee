"""Canonical chunks -> Anthropic's stream events, in their exact order.

    message_start
    (content_block_start, content_block_delta*, content_block_stop)*   one per text, thinking, tool call
    message_delta                                                       stop_reason and cumulative usage
    message_stop

A block stays open while the vendor's deltas continue it; a delta of another kind (or another
tool call) closes it and opens the next. ``event: error`` ends a stream that failed after it began.

Claude answering a request sent in its own format (``ChatRequest.claude``) hands over its own
events (``native``): their content blocks are relayed as they came (thinking with its
``signature_delta``, redacted thinking, citations), and its stop reason and sequence end the
message; the message's id and model, and the final usage, stay the router's.
"""

from __future__ import annotations

from typing import Any

import orjson

from routing.dialects.base import Choices, ClientUsage
from routing.errors import RouterError
from routing.vendors.base import TextRun

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}  # fmt: skip

# Anthropic's error types (docs.claude.com/en/api/errors); 402 is Anthropic's billing_error.
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error",
}  # fmt: skip


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def stop_reason(finish_reason: str | None) -> str | None:
    return STOP_REASONS.get(finish_reason, "end_turn") if finish_reason else None


def message_usage(usage: ClientUsage) -> dict[str, int]:
    """Anthropic's usage: ``input_tokens`` excludes the prompt tokens read from or written to the vendor's cache."""
    return {
        "input_tokens": max(usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens, 0),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def error_type(status: int) -> str:
    """Return Anthropic's error type for an HTTP status (another 4xx is an invalid request, another 5xx an API error)."""
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_payload(error: RouterError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(error.status), "message": error.message}}


def error_event(error: RouterError) -> bytes:
    return event("error", error_payload(error))


# A text_delta event of the open text block, as ``event`` writes it, but for the block's index and the text.
_TEXT_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_TEXT_MIDDLE = b',"delta":{"type":"text_delta","text":'
_TEXT_TAIL = b"}}\n\n"


class MessagesStream:
    """One streamed answer as Anthropic's events (one per vendor attempt)."""

    __slots__ = (
        "block", "generation_id", "index", "model", "started", "stop", "stop_sequence", "text_head", "tool", "tool_id",
    )  # fmt: skip

    def __init__(self, generation_id: str, model: str) -> None:
        self.generation_id = generation_id
        self.model = model
        self.started = False
        self.index = -1  # the open block's index; blocks are numbered from 0
        self.block = ""  # the open block's kind: "text", "thinking", "tool_use" or "" (none open)
        self.tool: Any = None  # the open tool call's canonical index
        self.tool_id = ""
        self.stop: str | None = None
        self.stop_sequence: str | None = None
        self.text_head = b""  # what a text_delta event of the open text block says before its text

    def chunk(self, choices: Choices, extra: dict[str, Any] | None, native: dict[str, Any] | None = None) -> bytes:
        if native is not None:
            return self.native(native)
        if self.block == "text" and len(choices) == 1:
            # Most chunks of most streams: more text of the open text block, and nothing else.
            choice = choices[0]
            delta = choice.get("delta")
            if type(delta) is dict and delta.keys() == {"content"} and not choice.get("finish_reason"):
                text = delta["content"]
                if type(text) is str and text and not choice.get("index"):
                    return self.text_head + orjson.dumps(text) + _TEXT_TAIL
        out = [] if self.started else [self.message_start()]
        for choice in choices:
            if choice.get("index", 0) != 0:
                continue  # n is 1: there is no other choice
            delta = choice.get("delta") or {}
            for name in ("reasoning_content", "reasoning"):
                if isinstance(text := delta.get(name), str) and text:
                    out.append(self.delta("thinking", {"type": "thinking_delta", "thinking": text}))
            for name in ("content", "refusal"):
                if isinstance(text := delta.get(name), str) and text:
                    out.append(self.delta("text", {"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                out.append(self.tool_delta(call))
            if choice.get("finish_reason"):
                self.stop = stop_reason(choice["finish_reason"])
        return b"".join(out)

    def text_run(self, run: TextRun) -> bytes | None:
        # As ``chunk`` renders each when the text block is open: a text's JSON string is its bytes.
        shape = run.shape
        if self.block != "text" or shape.delta.keys() != {"content"} or shape.choice.get("index"):
            return None
        raws = [raw for raw in run.raws if raw] if b"" in run.raws else run.raws
        if not raws:
            return b""
        return self.text_head + b'"' + (b'"' + _TEXT_TAIL + self.text_head + b'"').join(raws) + b'"' + _TEXT_TAIL

    def cut(self, choices: Choices) -> bytes:
        return self.chunk(choices, None)

    def finish(self, usage: ClientUsage | None) -> bytes:
        out = [] if self.started else [self.message_start()]
        out.append(self.close())
        counts = message_usage(usage) if usage is not None else {"output_tokens": 0}
        delta = {"stop_reason": self.stop or "end_turn", "stop_sequence": self.stop_sequence}
        out.append(event("message_delta", {"type": "message_delta", "delta": delta, "usage": counts}))
        out.append(event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def error(self, error: RouterError) -> bytes:
        return error_event(error)

    # -- Claude's own events ---------------------------------------------------------------

    def native(self, payload: dict[str, Any]) -> bytes:
        """One of Claude's own events: its content blocks as they came; the message's ends noted for ``finish``."""
        kind = payload.get("type")
        if kind == "message_start":
            if self.started:
                return b""
            usage = (payload.get("message") or {}).get("usage")
            return self.message_start(usage if isinstance(usage, dict) else None)
        out = b"" if self.started else self.message_start()
        if kind == "message_delta":
            delta = payload.get("delta") or {}
            self.stop = delta.get("stop_reason") or self.stop
            self.stop_sequence = delta.get("stop_sequence") or self.stop_sequence
            return out
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            out += self.close()  # a block the router opened (none, unless a cut came before)
            self.index = payload.get("index", self.index + 1)
            self.text_head = _TEXT_HEAD + str(self.index).encode() + _TEXT_MIDDLE
            # Text and thinking the router may yet continue (after a cut); any other kind it closes.
            opened = block.get("type")
            self.block = opened if opened in ("text", "thinking") else "native"
        elif kind == "content_block_stop":
            self.block = ""
        return out + event(str(kind), payload)

    # -- blocks ------------------------------------------------------------------------------

    def message_start(self, usage: dict[str, Any] | None = None) -> bytes:
        """``usage``: the vendor's prompt figures, as Claude's own ``message_start`` gave them."""
        self.started = True
        message: dict[str, Any] = {
            "id": self.generation_id, "type": "message", "role": "assistant", "content": [], "model": self.model,
            "stop_reason": None, "stop_sequence": None,
            # Otherwise the figures come with message_delta.
            "usage": usage if usage is not None else {"input_tokens": 0, "output_tokens": 0},
        }  # fmt: skip
        return event("message_start", {"type": "message_start", "message": message})

    def delta(self, kind: str, delta: dict[str, Any]) -> bytes:
        opened = b""
        if self.block != kind:
            start = (
                {"type": "text", "text": ""}
                if kind == "text"
                else {"type": "thinking", "thinking": "", "signature": ""}
            )
            opened = self.open(kind, start)
        return opened + event(
            "content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}
        )

    def tool_delta(self, call: dict[str, Any]) -> bytes:
        function = call.get("function") or {}
        opened = b""
        index, given = call.get("index", self.tool), call.get("id")
        if self.block != "tool_use" or index != self.tool or (given and given != self.tool_id):
            self.tool = index
            tool_id = self.tool_id = given or f"toolu_{self.generation_id}_{self.index + 1}"
            start: dict[str, Any] = {"type": "tool_use", "id": tool_id, "name": function.get("name") or "", "input": {}}
            opened = self.open("tool_use", start)
        arguments = function.get("arguments")
        if not arguments:
            return opened
        delta = {"type": "input_json_delta", "partial_json": arguments}
        return opened + event(
            "content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}
        )

    def open(self, kind: str, block: dict[str, Any]) -> bytes:
        closed = self.close()
        self.index += 1
        self.block = kind
        self.text_head = _TEXT_HEAD + str(self.index).encode() + _TEXT_MIDDLE
        return closed + event(
            "content_block_start", {"type": "content_block_start", "index": self.index, "content_block": block}
        )

    def close(self) -> bytes:
        if not self.block:
            return b""
        self.block = ""
        return event("content_block_stop", {"type": "content_block_stop", "index": self.index})
