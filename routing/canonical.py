"""The canonical requests: what client dialects parse into and vendor adapters consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# What ``ChatRequest.params`` may hold: the canonical request speaks OpenAI's parameter names,
# and each client dialect maps its own parameters onto these (the chat dialect's spec declares
# exactly these: routing/tests/test_schema_single_source.py).
PARAMETERS = frozenset({
    "audio", "frequency_penalty", "logit_bias", "logprobs", "max_completion_tokens", "max_tokens", "metadata",
    "modalities", "n", "parallel_tool_calls", "prediction", "presence_penalty", "reasoning_effort",
    "response_format", "seed", "service_tier", "stop", "store", "temperature", "thinking", "tool_choice", "tools",
    "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
})  # fmt: skip
# The request's own fields beside its parameters.
FIELDS = frozenset({"model", "messages", "stream", "stream_options", "models", "provider", "usage"})


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    # Forwardable OpenAI parameters, validated.
    params: dict[str, Any] = field(default_factory=dict)
    # Request-level fallbacks: `models` and `provider` (see routing.selection).
    models: list[str] = field(default_factory=list)
    provider: dict[str, Any] = field(default_factory=dict)
    # Sample from the k likeliest tokens: no OpenAI parameter means it, so it is a field of its
    # own that the adapters of vendors which take it send (Claude, Gemini); the others leave it.
    top_k: int | None = None
    # The request as a body of Claude's own Messages API (without ``model`` and ``stream``), when
    # it came in that format. An adapter that speaks Claude's wire format to a Claude model sends
    # it as is, so that what the fields above cannot carry (thinking signatures, cache_control,
    # documents) reaches Claude untouched; every other adapter reads the fields above.
    claude: dict[str, Any] | None = None

    @property
    def max_tokens_only(self) -> bool:
        """The limit came as ``max_tokens`` alone (some vendors do not count reasoning against it)."""
        return bool(self.params.get("max_tokens")) and not self.params.get("max_completion_tokens")


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A ``/v1/embeddings`` request: what its dialect parses into and the relay asks deployments."""

    model: str
    # Strings or token arrays, never both; one vector answers each, in order.
    inputs: tuple[str, ...] | tuple[tuple[int, ...], ...]
    encoding_format: str = "float"  # or "base64": little-endian float32 bytes, as OpenAI sends them
    dimensions: int | None = None
    user: str | None = None
