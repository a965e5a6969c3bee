"""The canonical chat request: what client dialects parse into and vendor adapters consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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

    @property
    def max_tokens_only(self) -> bool:
        """The limit came as ``max_tokens`` alone (some vendors do not count reasoning against it)."""
        return bool(self.params.get("max_tokens")) and not self.params.get("max_completion_tokens")
