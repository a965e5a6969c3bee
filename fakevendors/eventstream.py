"""AWS's ``application/vnd.amazon.eventstream`` framing, as Bedrock's streams use it: built here
from the format (prelude, headers, payload, message CRC), so the router's decoder meets real frames."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import orjson

from fakevendors.server import dumps


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (lengths + CRC), string headers, payload, message CRC."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack("!B", len(raw_name)) + raw_name + b"\x07" + struct.pack("!H", len(raw_value)) + raw_value
    prelude = struct.pack("!II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack("!I", zlib.crc32(message))


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    # Bedrock pads payloads with a "p" field of varying length so sizes leak nothing.
    return frame(headers, dumps({**payload, "p": "abcdefghij"[: 1 + len(event_type) % 9]}))


def chunk(claude_event: dict[str, Any]) -> bytes:
    """One of Claude's stream events as InvokeModelWithResponseStream frames it."""
    data = base64.b64encode(dumps(claude_event)).decode()
    headers = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, dumps({"bytes": data, "p": "abcdefghijklmnop"[: 1 + len(data) % 15]}))


def exception(exception_type: str, message: str) -> bytes:
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return frame(headers, orjson.dumps({"message": message}))


def corrupt(data: bytes) -> bytes:
    """Flip a payload bit; the message CRC no longer matches."""
    return data[:-5] + bytes([data[-5] ^ 0x01]) + data[-4:]
