"""Helpers the Bedrock tests share: the model and credentials of the live cast, and the wire tests' requests and decoding."""

from __future__ import annotations

import time
from typing import Any

import orjson

from billing.models import UsageRecord
from conftest import Cast
from fakevendors.bedrock import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY
from routing.dialects.chat.schema import parse_chat_request
from routing.vendors.base import ChunkEvent, VendorConfig
from routing.vendors.bedrock.events import ConverseStreamDecoder

MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"
SIGV4 = {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def generation_of(cast: Cast) -> str:
    """The generation id of the key's latest usage record (for a stream closed before its headers came)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        record = UsageRecord.objects.filter(api_key=cast.api_key).order_by("-id").first()
        if record is not None:
            return record.generation_id
        time.sleep(0.01)
    raise AssertionError("no usage record")


# -- the wire tests: requests parsed as the API parses them, event streams decoded -----------------


def chat(**body: Any):
    """A chat request as the API parses it, with a model and one user message unless given."""
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return parse_chat_request(orjson.dumps(body))


def config(credentials: dict[str, str] | None = None, base_url: str = "") -> VendorConfig:
    """A Bedrock vendor's configuration, with the fake's SigV4 credentials unless given."""
    secrets = credentials or {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY}
    return VendorConfig(7, "aws", "bedrock", base_url, {"region": REGION}, secrets, 5.0, 30.0, 30.0)


def decode(data: bytes, piece: int = 1) -> list[Any]:
    """Decode a ConverseStream body fed ``piece`` bytes at a time; return its events."""
    decoder = ConverseStreamDecoder("aws")
    events: list[Any] = []
    for i in range(0, len(data), piece):
        events.extend(decoder.feed(data[i : i + piece]))
    decoder.finish()
    return events


def deltas(events: list[Any]) -> list[dict[str, Any]]:
    return [e.choices[0]["delta"] for e in events if isinstance(e, ChunkEvent)]
