"""Claude on Bedrock in its own format: ``InvokeModel`` and ``InvokeModelWithResponseStream``.

A request that came as a Claude Messages body (``ChatRequest.claude``), answered by a Claude
model, is sent as that body with ``anthropic_version: bedrock-2023-05-31`` rather than translated
to Converse: Converse has no place for thinking signatures, redacted thinking, ``cache_control``
on any block, or documents, and answers in its own events. The stream is the same event-stream
framing as ConverseStream; each ``chunk`` event's ``bytes`` (base64) holds one of Claude's own
stream events, read by ``routing.vendors.claude_messages``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from routing.vendors.base import StreamEvent, UpstreamCall
from routing.vendors.bedrock.events import _message, exception_error, malformed
from routing.vendors.claude_messages import StreamState, is_native, native_body

ANTHROPIC_VERSION = "bedrock-2023-05-31"


def is_claude(model_id: str) -> bool:
    """A Claude model id, inference profile or foundation-model ARN (``[us.]anthropic.claude-...``)."""
    return "anthropic.claude" in model_id


def uses_invoke(call: UpstreamCall) -> bool:
    return is_native(call) and is_claude(call.upstream_model)


def invoke_body(call: UpstreamCall) -> dict[str, Any]:
    return native_body(call, ANTHROPIC_VERSION)


class InvokeStreamDecoder:
    """Feed raw ``InvokeModelWithResponseStream`` bytes, get router events; ``finish()`` at the end."""

    def __init__(self, vendor_name: str) -> None:
        self.vendor_name = vendor_name
        self.frames = EventStreamBuffer()
        self.fed = 0
        self.consumed = 0
        self.state = StreamState(vendor_name, native=True)

    def feed(self, data: bytes) -> Iterator[StreamEvent]:
        """Yield the events of every whole frame in ``data``, in order (good frames before a failure)."""
        self.frames.add_data(data)
        self.fed += len(data)
        try:
            for message in self.frames:
                self.consumed += message.prelude.total_length
                yield from self.message_events(message.headers, message.payload)
        except ParserError as exc:
            raise malformed(self.vendor_name, f"a corrupt event-stream frame ({type(exc).__name__})") from None

    def finish(self) -> None:
        if self.consumed != self.fed:
            raise malformed(self.vendor_name, "an event stream that ended inside a frame")
        if not self.state.finished:
            raise malformed(self.vendor_name, "an event stream that ended before message_stop")

    def message_events(self, headers: dict[str, Any], payload: bytes) -> list[StreamEvent]:
        kind = headers.get(":message-type")
        if kind == "exception":
            raise exception_error(self.vendor_name, str(headers.get(":exception-type", "")), _message(payload))
        if kind == "error":
            code = str(headers.get(":error-code", ""))
            raise exception_error(self.vendor_name, code, str(headers.get(":error-message", "")))
        if kind != "event" or headers.get(":event-type") != "chunk":
            return []
        try:
            part = orjson.loads(payload)
            event = orjson.loads(base64.b64decode(part["bytes"], validate=True))
        except (orjson.JSONDecodeError, binascii.Error, KeyError, TypeError):
            raise malformed(self.vendor_name, "a chunk that is not a base64 JSON event") from None
        if not isinstance(event, dict):
            raise malformed(self.vendor_name, "a chunk that is not a JSON object")
        return self.state.events(event)
