"""A local vendor for trying the router without an account: it echoes, word by word.

Embeddings: a unit vector per input, drawn from the input's SHA-256 (the same input, the same
vector). No network. Deterministic. Options: ``token_delay`` (seconds between words, default 0.05)
and ``first_token_delay`` (seconds before the first word, default 0). It yields the same
events as a real vendor, so it goes through the same relay, cancellation and billing.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import struct
from collections.abc import AsyncIterator
from typing import Any

from lib import tokens
from routing.vendors.base import (
    ChunkEvent,
    Completion,
    EmbeddingCall,
    Embeddings,
    OptionSpec,
    SettingProblem,
    StreamEvent,
    UpstreamCall,
    Usage,
    UsageEvent,
    VendorAdapter,
)

_WORDS = re.compile(r"\s*\S+")
TOKEN_DELAY = 0.05  # seconds between words, when the vendor sets none
# The length of a demo vector when the request sets no ``dimensions``.
DEMO_DIMENSIONS = 16


def _seconds(value: Any) -> bool:
    try:
        return float(value) >= 0
    except (TypeError, ValueError):
        return False


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class DemoAdapter(VendorAdapter):
    kind = "demo"
    option_names = ("token_delay", "first_token_delay")
    secret_names = ()
    option_specs = {
        "token_delay": OptionSpec(default=str(TOKEN_DELAY), help="Seconds between words."),
        "first_token_delay": OptionSpec(default="0", help="Seconds before the first word."),
    }
    base_url_help = "Not used: the demo vendor makes no network requests."

    @classmethod
    def problems(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[SettingProblem]:
        return [
            SettingProblem(name, f"{{{name}}} must be a number of seconds >= 0")
            for name in cls.option_names
            if name in options and not _seconds(options[name])
        ]

    @classmethod
    def destinations(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[tuple[str, str]]:
        return []  # no network

    def _answer(self, call: UpstreamCall) -> tuple[list[str], str]:
        words = _WORDS.findall("You said: " + (_last_user_text(call.request.messages).strip() or "nothing"))
        limit = call.request.max_tokens
        if limit is not None and len(words) > limit:
            return words[:limit], "length"
        return words, "stop"

    def _usage(self, call: UpstreamCall, text: str) -> Usage:
        encoding = tokens.encoding_for(call.upstream_model)
        return Usage(
            prompt_tokens=tokens.count_messages(call.request.messages, encoding),
            completion_tokens=tokens.count_text(text, encoding),
        )

    async def stream(self, call: UpstreamCall) -> AsyncIterator[list[StreamEvent]]:
        words, finish = self._answer(call)
        delay = float(self.vendor.options.get("token_delay", TOKEN_DELAY))
        await asyncio.sleep(float(self.vendor.options.get("first_token_delay", 0)))
        yield [ChunkEvent([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
        for i, word in enumerate(words):
            if i:
                await asyncio.sleep(delay)
            yield [ChunkEvent([{"index": 0, "delta": {"content": word}, "finish_reason": None}])]
        yield [
            ChunkEvent([{"index": 0, "delta": {}, "finish_reason": finish}]),
            UsageEvent(self._usage(call, "".join(words))),
        ]

    async def complete(self, call: UpstreamCall) -> Completion:
        words, finish = self._answer(call)
        await asyncio.sleep(float(self.vendor.options.get("first_token_delay", 0)))
        text = "".join(words)
        message = {"role": "assistant", "content": text}
        return Completion([{"index": 0, "message": message, "finish_reason": finish}], self._usage(call, text))

    serves_embeddings = True

    async def embed(self, call: EmbeddingCall) -> Embeddings:
        await asyncio.sleep(float(self.vendor.options.get("first_token_delay", 0)))
        size = call.dimensions or DEMO_DIMENSIONS
        vectors = [demo_vector(item, size) for item in call.inputs]
        return Embeddings(vectors, tokens.count_inputs(call.inputs, tokens.encoding_for(call.upstream_model)))


def demo_vector(item: str | tuple[int, ...], size: int) -> list[float]:
    """A unit vector of ``size`` floats drawn from the input's hash: the same input, the same vector."""
    seed = (item if isinstance(item, str) else ",".join(map(str, item))).encode()
    raw = b""
    block = 0
    while len(raw) < size * 4:
        raw += hashlib.sha256(seed + block.to_bytes(4, "little")).digest()
        block += 1
    values = [value / 2**31 for value in struct.unpack(f"<{size}i", raw[: size * 4])]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return [value / norm for value in values]
