"""Token counting that works offline, and estimates for the parts of a prompt that are not text.

bpe-openai ships the o200k_base and cl100k_base tables inside its wheel, so nothing is
downloaded at run time. It holds the GIL while it encodes, so a long text is encoded in
segments: between two segments another thread (the event loop, the heartbeat) gets its turn.
``CountingPool`` counts large prompts in threads of their own, so that they never queue in
front of the database writes or the heartbeat.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import Any, TypeVar

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


# Long texts are counted in segments cut just before a space, where the pre-tokenizer cuts
# anyway, so the sum is exact (a text without spaces is cut where it must be: off by a token
# or so per cut). A segment holds the GIL for a millisecond or so, and stays far below
# bpe-openai's own limits (a million characters, 200,000 tokens: even 4-byte characters at a
# token per byte make at most 131,072 tokens here).
_SEGMENT_CHARS = 32_768


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


def count_inputs(inputs: Sequence[str] | Sequence[Sequence[int]], encoding: str) -> int:
    """Count the tokens of embedding inputs: each text's, or each token array's length (no framing)."""
    return sum(len(item) if not isinstance(item, str) else count_text(item, encoding) for item in inputs)


def inputs_chars(inputs: Sequence[str] | Sequence[Sequence[int]]) -> int:
    """The characters ``count_inputs`` reads (token arrays cost nothing to count)."""
    return sum(len(item) for item in inputs if isinstance(item, str))


def _content_text(content: Any) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def count_messages(messages: list[dict[str, Any]], encoding: str, tools: list[Any] | None = None) -> int:
    """Count prompt tokens the way OpenAI frames chat messages (an estimate for other vendors).

    Images, audio and files count at the estimates of ``part_tokens``."""
    import orjson

    total = _REPLY_PRIMER
    for message in messages:
        total += _TOKENS_PER_MESSAGE
        parts = [str(message.get("role", ""))]
        content = message.get("content")
        parts.extend(_content_text(content))
        if isinstance(content, list):
            total += sum(part_tokens(part) for part in content)
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


def prompt_chars(messages: list[dict[str, Any]], tools: list[Any] | None = None) -> int:
    """Return about how many characters ``count_messages`` encodes (to tell a long prompt from a short one)."""
    size = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        size += sum(map(len, _content_text(message.get("content"))))
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                size += len(str(function.get("arguments", "")))
        content = message.get("content")
        if isinstance(content, list):
            # Reading an image's header (a JPEG's may be deep in it) is not free either.
            size += _PART_CHARS * sum(1 for part in content if isinstance(part, dict) and "text" not in part)
    if tools:
        size += len(str(tools))
    return size


# What a non-text part weighs in ``prompt_chars``, in characters.
_PART_CHARS = 4_096


# -- estimates for parts that are not text ---------------------------------------------------------
#
# The router holds a request's worst case against the key's credit and tokens-per-minute limits
# before the vendor has counted anything, so a prompt's images, audio and files need a figure
# of their own (the settled record bills the vendor's figure whenever the vendor reports one).
#
# Images follow OpenAI's published rule for its GPT-4o-class vision models: with ``detail: low``
# 85 tokens; otherwise the image is scaled down to fit 2048x2048, then down until its shorter
# side is at most 768, and costs 85 + 170 per 512-pixel tile. The size is read from the header of
# a ``data:`` URL (PNG, JPEG, GIF, WebP; nothing is decoded beyond the header); an image whose
# size is not known (a link, another format) counts as the largest high-detail image, 2048x768
# after scaling: 8 tiles, 1,445 tokens.
IMAGE_LOW_DETAIL_TOKENS = 85
IMAGE_BASE_TOKENS = 85
IMAGE_TILE_TOKENS = 170
IMAGE_UNKNOWN_SIZE_TOKENS = IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * 8
# Audio: 32 tokens per second (Gemini's published rate; OpenAI's audio models count fewer). A
# WAV file's duration comes from its header; any other format is taken to be 32 kbit/s, a low
# bitrate for speech, so that the estimate errs long.
AUDIO_TOKENS_PER_SECOND = 32
AUDIO_ASSUMED_BYTES_PER_SECOND = 4_000
# Files (PDFs): one token per 8 bytes of the file, at least an unknown image's worth; a file
# sent by id (size unknown here) counts 8,192 tokens.
FILE_BYTES_PER_TOKEN = 8
FILE_UNKNOWN_SIZE_TOKENS = 8_192
# JPEG keeps its size in a frame header after any metadata: look this far into the data.
_JPEG_SCAN_BYTES = 64 * 1024


def image_tokens(width: int, height: int, detail: str = "auto") -> int:
    """Return OpenAI's token count for an image of ``width`` x ``height`` pixels."""
    if detail == "low":
        return IMAGE_LOW_DETAIL_TOKENS
    if width <= 0 or height <= 0:
        return IMAGE_UNKNOWN_SIZE_TOKENS
    w, h = float(width), float(height)
    scale = min(1.0, 2048 / max(w, h))
    w, h = w * scale, h * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * math.ceil(w / 512 - 1e-9) * math.ceil(h / 512 - 1e-9)


def part_tokens(part: Any) -> int:
    """Return the estimated tokens of one non-text content part (0 for text and unknown parts)."""
    if not isinstance(part, dict):
        return 0
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        detail = image.get("detail") if isinstance(image, dict) else None
        if detail == "low":
            return IMAGE_LOW_DETAIL_TOKENS
        size = image_size(url) if isinstance(url, str) else None
        return image_tokens(*size) if size else IMAGE_UNKNOWN_SIZE_TOKENS
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            return 0
        return audio_tokens(audio["data"], str(audio.get("format", "")))
    if kind == "file":
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        if not isinstance(data, str):
            return FILE_UNKNOWN_SIZE_TOKENS
        length = _decoded_size(data.partition(",")[2] if data.startswith("data:") else data)
        return max(IMAGE_UNKNOWN_SIZE_TOKENS, math.ceil(length / FILE_BYTES_PER_TOKEN))
    return 0


def audio_tokens(data: str, audio_format: str) -> int:
    """Return the estimated tokens of base64 audio (see ``AUDIO_TOKENS_PER_SECOND``)."""
    size = _decoded_size(data)
    rate = AUDIO_ASSUMED_BYTES_PER_SECOND
    if audio_format == "wav":
        header = _b64_prefix(data, 44)
        if len(header) >= 32 and header[:4] == b"RIFF" and header[8:12] == b"WAVE":
            rate = int.from_bytes(header[28:32], "little") or rate  # the fmt chunk's byte rate
    return math.ceil(size / rate * AUDIO_TOKENS_PER_SECOND)


def _decoded_size(data: str) -> int:
    """Return the size of base64 ``data`` once decoded (without decoding it)."""
    padding = 2 if data.endswith("==") else 1 if data.endswith("=") else 0
    return len(data) * 3 // 4 - padding


def _b64_prefix(data: str, size: int) -> bytes:
    """Decode the first ``size`` bytes (about) of base64 ``data``; b"" if it is not base64."""
    chars = min(len(data), (size + 2) // 3 * 4)
    chars -= chars % 4
    try:
        return base64.b64decode(data[:chars], validate=False)
    except (binascii.Error, ValueError):
        return b""


def image_size(url: str) -> tuple[int, int] | None:
    """Return (width, height) of a base64 ``data:`` URL's PNG, JPEG, GIF or WebP image, read
    from its header; None when unknown (a link, another format, a damaged header)."""
    if not url.startswith("data:"):
        return None
    meta, _, data = url.partition(",")
    if not meta.endswith(";base64"):
        return None
    head = _b64_prefix(data, 32)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(head)
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(_b64_prefix(data, _JPEG_SCAN_BYTES))
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if len(head) < (25 if chunk == b"VP8L" else 30):
        return None
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8L":
        b = head[21:25]
        return 1 + (b[0] | (b[1] & 0x3F) << 8), 1 + (b[1] >> 6 | b[2] << 2 | (b[3] & 0x0F) << 10)
    if chunk == b"VP8 ":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    return None


# JPEG start-of-frame markers (baseline, progressive, lossless, ...): they carry the size.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_FRAMES:
            return int.from_bytes(data[at + 7 : at + 9], "big"), int.from_bytes(data[at + 5 : at + 7], "big")
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


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


T = TypeVar("T")
# Texts shorter than this (characters) are counted where they are: a thread handoff costs more.
INLINE_CHARS = 16 * 1024


class CountingPool:
    """Threads of their own for counting long prompts.

    Counting a megabyte takes tens of milliseconds with the GIL held; in a thread that others
    queue behind (a group-commit writer, asgiref's one shared worker thread) it delays all of
    them. Here it delays no queue: short texts are counted on the spot, long ones in this pool,
    and the segments of ``count_text`` let other threads run in between."""

    def __init__(self, workers: int, inline_chars: int = INLINE_CHARS) -> None:
        self.workers = max(1, workers)
        self.inline_chars = inline_chars
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None or self._pid != os.getpid():  # a forked child starts its own threads
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="siraya-tokens")
            self._pid = os.getpid()
        return self._executor

    async def run(self, size: int, count: Callable[..., T], *args: Any) -> T:
        """Return ``count(*args)``, computed on the spot if ``size`` (characters) is small, else in the pool."""
        if size < self.inline_chars:
            return count(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool(), partial(count, *args))

    async def messages(self, messages: list[dict[str, Any]], encoding: str, tools: list[Any] | None = None) -> int:
        return await self.run(prompt_chars(messages, tools), count_messages, messages, encoding, tools)

    async def text(self, text: str, encoding: str) -> int:
        return await self.run(len(text), count_text, text, encoding)
