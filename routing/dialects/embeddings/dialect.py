"""Embeddings on the wire: OpenAI's list of embedding objects, OpenAI-shaped errors."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any

import orjson

from routing.canonical import EmbeddingRequest
from routing.dialects.base import EmbeddingAnswer
from routing.dialects.embeddings.schema import parse_embeddings_request
from routing.errors import RouterError


def base64_vector(vector: list[float]) -> str:
    """The vector as OpenAI's ``base64`` encoding sends it: little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class Embeddings:
    name = "embeddings"
    api = "embeddings"

    def authorization(self, header: Callable[[bytes], str]) -> str:
        return header(b"authorization")

    def parse(self, body: bytes) -> EmbeddingRequest:
        return parse_embeddings_request(body)

    def answer(self, answer: EmbeddingAnswer) -> bytes:
        encode: Callable[[list[float]], Any] = (
            base64_vector if answer.request.encoding_format == "base64" else lambda vector: vector
        )
        data = [
            {"object": "embedding", "index": index, "embedding": encode(vector)}
            for index, vector in enumerate(answer.vectors)
        ]
        usage = {"prompt_tokens": answer.prompt_tokens, "total_tokens": answer.prompt_tokens}
        return orjson.dumps({"object": "list", "data": data, "model": answer.model, "usage": usage})

    def error_body(self, error: RouterError) -> bytes:
        return error.json()
