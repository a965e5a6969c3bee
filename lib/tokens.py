"""Token counting that works offline.

bpe-openai ships the o200k_base and cl100k_base tables inside its wheel, so nothing is
downloaded at run time; it encodes a 100k-token prompt in about 15 ms here.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

import bpe_openai

ENCODINGS = ("o200k_base", "cl100k_base")
# Model-name prefixes that use o200k_base (current OpenAI families); everything else defaults.
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss")
# Per-message framing OpenAI adds around each chat message, and the reply primer.
_TOKENS_PER_MESSAGE = 3
_REPLY_PRIMER = 3


@cache
def _encoding(name: str) -> Any:
    return bpe_openai.get_encoding(name)


def encoding_for(model_name: str, configured: str = "", default: str = "cl100k_base") -> str:
    """Return the encoding to count ``model_name``'s tokens with."""
    if configured:
        return configured
    base = model_name.rsplit("/", 1)[-1].lower()
    return "o200k_base" if base.startswith(_O200K_PREFIXES) else default


# bpe-openai refuses texts of a million characters or more; longer texts are counted in
# segments cut just before a space, where the pre-tokenizer cuts anyway, so the sum is exact.
_SEGMENT_CHARS = 500_000


def _segments(text: str) -> list[str]:
    parts: list[str] = []
    start = 0
    while len(text) - start > _SEGMENT_CHARS:
        cut = text.rfind(" ", start + 1, start + _SEGMENT_CHARS)
        if cut <= start:
            cut = start + _SEGMENT_CHARS
        parts.append(text[start:cut])
        start = cut
    parts.append(text[start:])
    return parts


def count_text(text: str, encoding: str) -> int:
    if not text:
        return 0
    if len(text) <= _SEGMENT_CHARS:
        return len(_encoding(encoding).encode_ordinary(text))
    return sum(len(_encoding(encoding).encode_ordinary(part)) for part in _segments(text))


def _content_text(content: Any) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def count_messages(messages: list[dict[str, Any]], encoding: str, tools: list[Any] | None = None) -> int:
    """Count prompt tokens the way OpenAI frames chat messages (an estimate for other vendors)."""
    import orjson

    total = _REPLY_PRIMER
    for message in messages:
        total += _TOKENS_PER_MESSAGE
        parts = [str(message.get("role", ""))]
        parts.extend(_content_text(message.get("content")))
        if message.get("name"):
            parts.append(str(message["name"]))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {} if isinstance(call, dict) else {}
            parts.append(str(function.get("name", "")))
            parts.append(str(function.get("arguments", "")))
        total += count_text("\n".join(parts), encoding)
    if tools:
        total += count_text(orjson.dumps(tools).decode(), encoding)
    return total


def warm_up() -> None:
    for name in ENCODINGS:
        _encoding(name)


def truncate_text(text: str, limit: int, encoding: str) -> str:
    """Return the longest prefix of ``text`` that holds at most ``limit`` tokens."""
    if limit <= 0:
        return ""
    kept: list[str] = []
    for part in _segments(text):
        ids = _encoding(encoding).encode_ordinary(part)
        if len(ids) >= limit:
            kept.append(str(_encoding(encoding).decode(ids[:limit])))
            break
        kept.append(part)
        limit -= len(ids)
    return "".join(kept)
