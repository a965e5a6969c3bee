"""The interface every vendor adapter implements, and the events it yields.

An adapter turns one router request into one upstream call and the upstream's answer into
OpenAI-shaped pieces: ``ChunkEvent`` (a chunk's ``choices``) and ``UsageEvent`` (token
counts the vendor reported). Failures are raised as ``UpstreamError``. The relay owns
everything vendor-neutral: ids, keepalives, cancellation, counting and billing.

``stream()`` is an async generator of batches: the events decoded from one network read
come together in one list, so the relay handles them in one pass and hands them to the
client in one write (a vendor that sends faster than the client's loop turns costs one
write per read, not one per token). The relay closes it with ``aclose()`` on cancellation,
so an adapter must release its upstream connection in ``finally`` (``async with`` does).
Events decoded before a failure in the same read are yielded before the failure is raised.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ops import logs

if TYPE_CHECKING:
    from routing.schema import ChatRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VendorConfig:
    """What an adapter needs to know about its vendor; credentials already decrypted."""

    id: int
    name: str
    kind: str
    base_url: str
    options: dict[str, Any]
    credentials: dict[str, Any] = field(repr=False)
    connect_timeout: float
    first_byte_timeout: float
    idle_timeout: float


# The largest token count a vendor may report for one field of one request. Today's longest
# context windows hold a few million tokens; a figure past this (or negative, or not an
# integer) is a broken or hostile vendor, and counts as missing: the router counts instead.
MAX_VENDOR_TOKENS = 10_000_000
# Characters of a rejected figure's repr() written to the log.
_LOGGED_REPR = 80


def vendor_token_count(value: Any, vendor_name: str, field: str) -> int | None:
    """Return a vendor's token figure if it is an integer from 0 to ``MAX_VENDOR_TOKENS``; else
    None (missing: the router counts instead), logging a figure that was there but unusable."""
    if type(value) is int and 0 <= value <= MAX_VENDOR_TOKENS:  # type() leaves out bool
        return value
    if value is not None:
        logger.warning(
            "vendor %s reported an unusable %s: %s",
            vendor_name,
            field,
            repr(value)[:_LOGGED_REPR],
            extra={"generation_id": logs.generation_id.get(), "vendor": vendor_name, "field": field},
        )
    return None


@dataclass(slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def merge(self, other: Usage) -> Usage:
        """Return this usage updated with the figures ``other`` reports (later figures win)."""
        return Usage(
            prompt_tokens=other.prompt_tokens if other.prompt_tokens is not None else self.prompt_tokens,
            completion_tokens=(
                other.completion_tokens if other.completion_tokens is not None else self.completion_tokens
            ),
            cached_tokens=other.cached_tokens or self.cached_tokens,
            reasoning_tokens=other.reasoning_tokens or self.reasoning_tokens,
        )


@dataclass(slots=True)
class ChunkEvent:
    # OpenAI `choices` entries: {"index", "delta", "finish_reason", ...}.
    choices: list[dict[str, Any]]
    # Extra top-level chunk fields to relay (system_fingerprint, service_tier, ...).
    extra: dict[str, Any] | None = None


@dataclass(slots=True)
class UsageEvent:
    usage: Usage


StreamEvent = ChunkEvent | UsageEvent


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) answer."""

    choices: list[dict[str, Any]]
    usage: Usage | None
    extra: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    request: ChatRequest
    upstream_model: str
    generation_id: str
    # The model's completion ceiling: sent in the vendor's own field when the client set no
    # limit, so that the credit hold (which assumed it) is a real ceiling.
    max_output_tokens: int = 4096

    @property
    def completion_limit(self) -> int:
        """The completion tokens the vendor is asked to stay within: the client's or the model's."""
        return self.request.max_tokens or self.max_output_tokens


class VendorAdapter(ABC):
    """One vendor kind's wire format. Instances are per vendor and may cache (tokens, signers)."""

    kind: ClassVar[str]
    # Options the kind accepts besides base_url; secrets are kept encrypted.
    option_names: ClassVar[tuple[str, ...]] = ()
    secret_names: ClassVar[tuple[str, ...]] = ("api_key",)
    # False where the vendor's ``max_tokens`` bounds the answer but not its reasoning (ModelArk).
    max_tokens_counts_reasoning: ClassVar[bool] = True

    def __init__(self, vendor: VendorConfig) -> None:
        self.vendor = vendor

    @classmethod
    def validate(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> None:
        """Raise ``ValueError`` with a one-line message when the vendor cannot work as configured."""

    @classmethod
    def destinations(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[tuple[str, str]]:
        """Return (setting, URL) for every place this configuration sends requests, and so credentials, to.

        The setting is the field that decides the URL (``base_url``, an option or a secret name):
        the host policy and the credentials-follow-the-origin rule report their errors there.
        """
        return [("base_url", base_url)] if base_url else []

    @classmethod
    def parse_secret(cls, name: str, text: str) -> Any:
        """Return the stored value of secret ``name`` typed as ``text`` (``ValueError``, without the text, if unusable)."""
        return text

    @classmethod
    def limit_counts_reasoning(cls, request: ChatRequest) -> bool:
        """Whether the vendor counts reasoning text against the limit ``request`` sets.

        The router's safety-net cut (``routing.relay.checkpoint``) counts what the vendor counts,
        and the credit hold adds a reasoning allowance where it does not (``billing.credit``).
        """
        return cls.max_tokens_counts_reasoning or not request.max_tokens_only

    @abstractmethod
    def stream(self, call: UpstreamCall) -> AsyncIterator[list[StreamEvent]]:
        """Yield the answer as batches of events (one per network read); raise ``UpstreamError`` on failure."""

    @abstractmethod
    async def complete(self, call: UpstreamCall) -> Completion:
        """Return the whole answer; raise ``UpstreamError`` on failure."""
