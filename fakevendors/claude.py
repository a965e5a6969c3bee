"""Claude's own Messages answers, as the fake Vertex (``streamRawPredict``) and the fake Bedrock
(``InvokeModelWithResponseStream``) both send them: the message object and its stream events.

Thinking comes as Claude sends it: a ``thinking`` block whose text streams in ``thinking_delta``
events and whose ``signature`` comes last, in one ``signature_delta``. Every signature is issued
here (``Signatures``) and a later turn's ``thinking`` block must carry one this fake issued, for
exactly the thinking it was issued with, as Claude checks; otherwise the request is a 400.
Cache usage: ``cache_creation_input_tokens`` and ``cache_read_input_tokens`` beside
``input_tokens`` in ``message_start`` and the whole message.
"""

from __future__ import annotations

import secrets
from typing import Any

from fakevendors.openai import words

INPUT_TOKENS = 31  # what the fake reports as Claude's input_tokens


class Signatures:
    """The thinking signatures one fake issued: signature -> the thinking it signs."""

    def __init__(self) -> None:
        self.issued: dict[str, str] = {}
        self.verified: list[str] = []  # signatures later turns brought back, in order

    def issue(self, thinking: str) -> str:
        signature = "EqQBCkYIBxgCKkD" + secrets.token_urlsafe(24)
        self.issued[signature] = thinking
        return signature

    def problem(self, body: dict[str, Any]) -> str | None:
        """Why a request's earlier thinking blocks are not ones this fake signed, or None."""
        for i, message in enumerate(body.get("messages") or ()):
            content = message.get("content")
            for j, block in enumerate(content if isinstance(content, list) else ()):
                if block.get("type") != "thinking":
                    continue
                signature = block.get("signature")
                if self.issued.get(signature) != block.get("thinking"):
                    return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                self.verified.append(signature)
        return None


def usage(input_tokens: int, cache_read: int, cache_write: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output_tokens,
    }


def message(model: str, content: list[dict[str, Any]], stop: str | None, counts: dict[str, Any]) -> dict[str, Any]:
    return {"id": "msg_fake_claude", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": counts}  # fmt: skip


def thinking_block(thoughts: int, signatures: Signatures) -> dict[str, Any]:
    thinking = "".join(words(thoughts))
    return {"type": "thinking", "thinking": thinking, "signature": signatures.issue(thinking)}


def message_start(model: str, counts: dict[str, Any]) -> dict[str, Any]:
    # Its output_tokens is a placeholder, as Claude's is.
    return {"type": "message_start", "message": message(model, [], None, {**counts, "output_tokens": 1})}


def thinking_events(index: int, thoughts: int, signatures: Signatures) -> list[dict[str, Any]]:
    """A thinking block as Claude streams it: start, a delta per word, the signature, stop."""
    block = thinking_block(thoughts, signatures)
    events: list[dict[str, Any]] = [
        {"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": ""}}
    ]
    events += [
        {"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": word}}
        for word in words(thoughts)
    ]
    events.append({"type": "content_block_delta", "index": index,
                   "delta": {"type": "signature_delta", "signature": block["signature"]}})  # fmt: skip
    events.append({"type": "content_block_stop", "index": index})
    return events


def text_delta(index: int, word: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": word}}


def message_end(stop: str, output_tokens: int) -> list[dict[str, Any]]:
    return [
        {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
         "usage": {"output_tokens": output_tokens}},
        {"type": "message_stop"},
    ]  # fmt: skip
