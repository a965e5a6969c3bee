"""Bedrock's ``ConverseStream`` answer: ``application/vnd.amazon.eventstream`` frames as OpenAI chunks.

Frames are decoded and CRC-checked by botocore's ``EventStreamBuffer``. Each event's JSON
payload becomes zero or one ``ChunkEvent`` (or a ``UsageEvent`` for ``metadata``); an
``exception`` frame becomes an ``UpstreamError`` with the status Bedrock documents for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from routing.errors import UpstreamError
from routing.vendors.base import ChunkEvent, StreamEvent, UsageEvent
from routing.vendors.bedrock.converse import finish_reason, usage_from_converse

# Client status and whether another deployment may be tried, per Bedrock exception.
EXCEPTIONS: dict[str, tuple[int, bool]] = {
    "throttlingException": (429, True),
    "validationException": (400, False),
    "serviceUnavailableException": (502, True),
    "internalServerException": (502, True),
    "modelStreamErrorException": (502, False),
    "modelTimeoutException": (504, True),
}
MAX_MESSAGE = 300  # characters of a vendor's error message passed on


def exception_error(vendor_name: str, exception_type: str, message: str) -> UpstreamError:
    """Map a Bedrock exception (``throttlingException`` or ``ThrottlingException``) to an error."""
    name = exception_type[:1].lower() + exception_type[1:]
    status, retryable = EXCEPTIONS.get(name, (502, False))
    detail = f": {message[:MAX_MESSAGE]}" if message else "."
    return UpstreamError(
        status, f"Vendor '{vendor_name}' reported {name or 'an error'}{detail}", code=name or None, retryable=retryable
    )


def malformed(vendor_name: str, what: str) -> UpstreamError:
    return UpstreamError(502, f"Vendor '{vendor_name}' sent {what}.", code="upstream_malformed")


class ConverseStreamDecoder:
    """Feed raw response bytes, get OpenAI-shaped events; ``finish()`` at the end of the body."""

    def __init__(self, vendor_name: str) -> None:
        self.vendor_name = vendor_name
        self.frames = EventStreamBuffer()
        self.fed = 0
        self.consumed = 0
        # contentBlockIndex of each toolUse block -> its OpenAI tool_calls index.
        self.tool_index: dict[int, int] = {}
        self.role_sent = False
        self.stopped = False

    def feed(self, data: bytes) -> Iterator[StreamEvent]:
        """Yield the events of every whole frame in ``data``, in order.

        A generator, not a list: when one network read holds good frames followed by an
        exception or a corrupt frame, the good ones still reach the client first.
        """
        self.frames.add_data(data)
        self.fed += len(data)
        try:
            for message in self.frames:
                self.consumed += message.prelude.total_length
                event = self.message_event(message.headers, message.payload)
                if event is not None:
                    yield event
        except ParserError as exc:
            raise malformed(self.vendor_name, f"a corrupt event-stream frame ({type(exc).__name__})") from None

    def finish(self) -> None:
        if self.consumed != self.fed:
            raise malformed(self.vendor_name, "an event stream that ended inside a frame")
        if not self.stopped:
            raise malformed(self.vendor_name, "an event stream that ended before messageStop")

    def message_event(self, headers: dict[str, Any], payload: bytes) -> StreamEvent | None:
        kind = headers.get(":message-type")
        if kind == "exception":
            raise exception_error(self.vendor_name, str(headers.get(":exception-type", "")), _message(payload))
        if kind == "error":
            code = str(headers.get(":error-code", ""))
            raise exception_error(self.vendor_name, code, str(headers.get(":error-message", "")))
        if kind != "event":
            return None
        try:
            body = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            raise malformed(self.vendor_name, "an event that is not JSON") from None
        if not isinstance(body, dict):
            return None
        handler = self.HANDLERS.get(str(headers.get(":event-type", "")))
        return handler(self, body) if handler else None

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> ChunkEvent:
        if not self.role_sent:
            # Bedrock's messageStart carries only the role: it rides on the first real delta, so
            # the client's HTTP status is still open when an exception comes before any text.
            delta = {"role": "assistant", **delta}
            self.role_sent = True
        return ChunkEvent([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])

    def on_block_start(self, body: dict[str, Any]) -> StreamEvent | None:
        use = (body.get("start") or {}).get("toolUse")
        if not isinstance(use, dict):
            return None
        index = self.tool_index.setdefault(int(body.get("contentBlockIndex") or 0), len(self.tool_index))
        call = {"index": index, "id": use.get("toolUseId"), "type": "function"}
        return self.chunk({"tool_calls": [{**call, "function": {"name": use.get("name"), "arguments": ""}}]})

    def on_block_delta(self, body: dict[str, Any]) -> StreamEvent | None:
        delta = body.get("delta") or {}
        text = delta.get("text")
        if isinstance(text, str):
            return self.chunk({"content": text}) if text else None
        use = delta.get("toolUse")
        if isinstance(use, dict) and isinstance(use.get("input"), str):
            index = self.tool_index.setdefault(int(body.get("contentBlockIndex") or 0), len(self.tool_index))
            return self.chunk({"tool_calls": [{"index": index, "function": {"arguments": use["input"]}}]})
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict) and isinstance(reasoning.get("text"), str) and reasoning["text"]:
            return self.chunk({"reasoning_content": reasoning["text"]})
        return None  # reasoning signatures, redacted reasoning, citations: nothing to relay

    def on_message_stop(self, body: dict[str, Any]) -> StreamEvent | None:
        self.stopped = True
        return self.chunk({}, finish_reason(body.get("stopReason")))

    def on_metadata(self, body: dict[str, Any]) -> StreamEvent | None:
        usage = usage_from_converse(body.get("usage"), self.vendor_name)
        return UsageEvent(usage) if usage is not None else None

    HANDLERS = {
        "contentBlockStart": on_block_start,
        "contentBlockDelta": on_block_delta,
        "messageStop": on_message_stop,
        "metadata": on_metadata,
    }


def _message(payload: bytes) -> str:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    message = body.get("message") or body.get("Message") if isinstance(body, dict) else None
    return str(message) if message else ""
