"""Images, audio and files in a prompt count against a key's limits (estimated before the vendor counts)."""

from __future__ import annotations

import asyncio
import base64
import struct
import threading
import zlib
from decimal import Decimal
from typing import Any

import pytest

from billing.models import UsageRecord
from billing.services import api_key_create
from fakevendors.openai import PROMPT_TOKENS
from lib import tokens
from routing.tests.inprocess import Exchange, InProcessRelay

TEXT = [{"type": "text", "text": "What is in these pictures?"}]


def png(width: int, height: int) -> bytes:
    """A valid black-and-white PNG of ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" + bytes((width + 7) // 8)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def jpeg(width: int, height: int, metadata: int = 30_000) -> bytes:
    """A JPEG's segments up to its frame header, behind ``metadata`` bytes of EXIF-like data."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    app1 = b"\xff\xe1" + struct.pack(">H", metadata + 2) + bytes(metadata)
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + app1 + sof0 + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\0\0\0;"


def webp(width: int, height: int, kind: bytes) -> bytes:
    if kind == b"VP8X":
        body = b"\0" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif kind == b"VP8L":
        bits = (width - 1) | (height - 1) << 14
        body = b"\x2f" + bits.to_bytes(4, "little")
    else:
        body = b"\0\0\0\x9d\x01\x2a" + struct.pack("<HH", width, height)
    data = kind + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", len(data) + 4) + b"WEBP" + data


def data_url(image: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"


def image_part(url: str, detail: str | None = None) -> dict:
    image = {"url": url} if detail is None else {"url": url, "detail": detail}
    return {"type": "image_url", "image_url": image}


# -- the estimates ---------------------------------------------------------------------------------


def test_image_tokens_match_openais_published_examples():
    # OpenAI's vision guide: 1024x1024 high costs 765; 2048x4096 high 1105; 4096x8192 low 85.
    assert tokens.image_tokens(1024, 1024, "high") == 765
    assert tokens.image_tokens(2048, 4096, "high") == 1105
    assert tokens.image_tokens(4096, 8192, "low") == 85
    assert tokens.image_tokens(2048, 4096, "auto") == 1105  # auto counts as high
    assert tokens.image_tokens(512, 512) == 85 + 170  # small images are not scaled up
    assert tokens.image_tokens(2048, 768) == tokens.IMAGE_UNKNOWN_SIZE_TOKENS == 1445  # the most any image costs


def test_image_size_is_read_from_the_header_of_a_data_url():
    assert tokens.image_size(data_url(png(2048, 4096))) == (2048, 4096)
    assert tokens.image_size(data_url(jpeg(1024, 768), "image/jpeg")) == (1024, 768)
    assert tokens.image_size(data_url(gif(300, 200), "image/gif")) == (300, 200)
    for kind in (b"VP8X", b"VP8L", b"VP8 "):
        assert tokens.image_size(data_url(webp(1000, 600, kind), "image/webp")) == (1000, 600), kind
    assert tokens.image_size("https://example.com/cat.png") is None
    assert tokens.image_size("data:image/png;base64,bm90IGFuIGltYWdl") is None


def test_image_parts_count_by_size_and_detail():
    assert tokens.part_tokens(image_part(data_url(png(1024, 1024)))) == 765
    assert tokens.part_tokens(image_part(data_url(png(2048, 4096)), "high")) == 1105
    assert tokens.part_tokens(image_part(data_url(png(4096, 8192)), "low")) == 85
    # Size unknown (a link, a damaged header): the largest high-detail image; low detail is 85 whatever the size.
    assert tokens.part_tokens(image_part("https://example.com/cat.png")) == 1445
    assert tokens.part_tokens(image_part("data:image/png;base64,AAAA")) == 1445
    assert tokens.part_tokens(image_part("https://example.com/cat.png", "low")) == 85


def test_audio_and_files_count_by_their_size():
    seconds_of_wav = 2
    fmt = struct.pack("<HHIIHH", 1, 1, 16_000, 32_000, 2, 16)  # PCM, mono, 16 kHz, 32,000 bytes/s
    pcm = bytes(32_000 * seconds_of_wav)
    wav = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
    wav += b"data" + struct.pack("<I", len(pcm)) + pcm
    wav_part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}
    assert tokens.part_tokens(wav_part) == pytest.approx(seconds_of_wav * tokens.AUDIO_TOKENS_PER_SECOND, abs=1)
    # Other formats: taken as 32 kbit/s, so 40,000 bytes are 10 s.
    mp3_part = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(bytes(40_000)).decode(), "format": "mp3"},
    }
    assert tokens.part_tokens(mp3_part) == 10 * tokens.AUDIO_TOKENS_PER_SECOND
    pdf = base64.b64encode(bytes(80_000)).decode()
    assert tokens.part_tokens({"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf}"}}) == 10_000
    assert tokens.part_tokens({"type": "file", "file": {"file_id": "file-abc"}}) == tokens.FILE_UNKNOWN_SIZE_TOKENS
    assert tokens.part_tokens({"type": "text", "text": "hello"}) == 0


def test_prompt_count_adds_the_parts_estimates_to_the_text():
    text_only = tokens.count_messages([{"role": "user", "content": TEXT}], "cl100k_base")
    url = data_url(png(1024, 1024))
    content = [*TEXT, image_part(url), image_part(url)]
    assert tokens.count_messages([{"role": "user", "content": content}], "cl100k_base") == text_only + 2 * 765


# -- counting long texts ------------------------------------------------------------------------


def test_a_megabyte_that_tokenizes_densely_is_counted():
    # Base64 makes about 0.7 tokens per character: 500,000-character segments made more than
    # the 200,000 tokens bpe-openai encodes in one call, and the request answered 500.
    dense = base64.b64encode(bytes(range(256)) * 3000).decode()[:1_000_000]
    assert tokens.count_text(dense, "cl100k_base") > 200_000


def test_prose_counted_in_segments_is_counted_exactly():
    words = ("the cat sat on a mat and then it ran far away " * 3_000).strip()
    assert len(words) > 4 * tokens._SEGMENT_CHARS
    whole = len(tokens._encoding("cl100k_base").encode_ordinary(words))  # one call, no segments
    assert tokens.count_text(words, "cl100k_base") == whole


def test_long_texts_are_counted_in_the_pool_short_ones_on_the_spot():
    pool = tokens.CountingPool(2)

    async def where(size: int) -> str:
        return await pool.run(size, lambda: threading.current_thread().name)

    assert asyncio.run(where(100)) == threading.current_thread().name
    assert asyncio.run(where(tokens.INLINE_CHARS)).startswith("siraya-tokens")


# -- through a live router ------------------------------------------------------------------------


def chat(cast: InProcessRelay, key: str, content: list, **body: Any) -> Exchange:
    """Send a chat request through the router in process (the fake vendor on loopback)."""
    return cast.chat(messages=[{"role": "user", "content": content}], key=key, **body)


@pytest.fixture
def cast(relay_openai: InProcessRelay) -> InProcessRelay:
    return relay_openai


def test_images_count_against_a_credit_limit(cast, fake_openai):
    fake_openai.scenario.tokens = 3
    # $1 per million input tokens: $0.005 holds 5,000 tokens; eight images of unknown size are 11,560.
    api_key, key = api_key_create("pictures", credit_limit=Decimal("0.005"))
    many = chat(cast, key, [*TEXT, *[image_part("https://example.com/cat.png")] * 8], max_tokens=10)
    assert many.status_code == 402, many.text
    assert many.json()["error"]["code"] == "credit_limit_exceeded"
    one = chat(cast, key, [*TEXT, image_part("https://example.com/cat.png", "low")], max_tokens=10)
    assert one.status_code == 200, one.text
    # The settled record bills the vendor's figure, not the estimate.
    record = cast.record(one.headers["x-generation-id"])
    assert (record.prompt_tokens, record.completion_tokens) == (PROMPT_TOKENS, 3)
    assert UsageRecord.objects.filter(api_key=api_key, http_status=402).count() == 1


def test_images_count_against_tokens_per_minute(cast, fake_openai):
    fake_openai.scenario.tokens = 3
    _, key = api_key_create("pictures", tokens_per_minute=5_000)
    url = data_url(png(1024, 1024))
    four = [*TEXT, *[image_part(url)] * 4]
    prompt = tokens.count_messages([{"role": "user", "content": four}], "cl100k_base")
    assert prompt == tokens.count_messages([{"role": "user", "content": TEXT}], "cl100k_base") + 4 * 765
    first = chat(cast, key, four, max_tokens=10)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-remaining-tokens"] == str(5_000 - prompt - 10)
    cast.record(first.headers["x-generation-id"])
    eight = chat(cast, key, [*TEXT, *[image_part(url)] * 8], max_tokens=10)
    assert eight.status_code == 429, eight.text
    assert eight.json()["error"]["code"] == "request_exceeds_rate_limit"
