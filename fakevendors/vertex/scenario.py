"""The fake Vertex's scenario: how it answers (tokens, delays, failures), and its HTTP failure before any answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fakevendors.server import Connection


@dataclass
class Scenario:
    tokens: int = 5
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    # Fail before the answer with this HTTP status and body.
    status: int = 200
    error_body: dict[str, Any] | None = None
    # After this many tokens, send the vendor's in-stream error event.
    error_after: int | None = None
    # Answer with a function call when tools are offered (and no tool result came back yet).
    tool_call: bool = False
    # Reasoning words before the answer (Gemini `thought` parts, Claude thinking deltas).
    thoughts: int = 0
    # Gemini: block the prompt with this promptFeedback.blockReason.
    block_prompt: str | None = None
    # After this many tokens, end the body cleanly without a finish (a cut stream).
    cut_after: int | None = None
    # Seconds the issued access tokens live.
    expires_in: int = 3600
    # Respect maxOutputTokens / max_tokens (a bad vendor ignores it), counting with a tokenizer
    # of this many router tokens per token of its own, in which it also reports usage
    # (see ``fakevendors.openai.honoured`` and ``own_count``).
    honour_max_tokens: bool = True
    tokenizer_ratio: float = 1.0
    # Fields that replace the reported usage's (a broken vendor): Gemini usageMetadata fields,
    # Claude usage fields (in message_start and message_delta alike).
    usage_override: dict[str, Any] | None = None
    # The message of the in-stream error event (error_after), instead of the fake's own.
    error_text: str | None = None
    # Claude: prompt tokens read from and written to its prompt cache, as it reports them.
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    # Embeddings: :predict requests answered before ``status`` applies (a failure part way through).
    predictions_before_failure: int = 0


async def fail_first(conn: Connection, s: Scenario, default: dict[str, Any]) -> bool:
    """Answer with the scenario's HTTP error, if any; return whether it did."""
    if s.status == 200:
        return False
    if await conn.pause(s.first_token_delay):
        conn.send_json(s.status, s.error_body or default)
    return True
