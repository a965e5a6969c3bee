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
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from lib import logs

if TYPE_CHECKING:
    from routing.canonical import ChatRequest

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
    cached_tokens: int = 0  # of the prompt, read from the vendor's prompt cache
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0  # of the prompt, written to the vendor's prompt cache

    def merge(self, other: Usage) -> Usage:
        """Return this usage updated with the figures ``other`` reports (later figures win)."""
        return Usage(
            prompt_tokens=other.prompt_tokens if other.prompt_tokens is not None else self.prompt_tokens,
            completion_tokens=(
                other.completion_tokens if other.completion_tokens is not None else self.completion_tokens
            ),
            cached_tokens=other.cached_tokens or self.cached_tokens,
            reasoning_tokens=other.reasoning_tokens or self.reasoning_tokens,
            cache_write_tokens=other.cache_write_tokens or self.cache_write_tokens,
        )


@dataclass(slots=True)
class ChunkEvent:
    # OpenAI `choices` entries: {"index", "delta", "finish_reason", ...}.
    choices: list[dict[str, Any]]
    # Extra top-level chunk fields to relay (system_fingerprint, service_tier, ...).
    extra: dict[str, Any] | None = None
    # The vendor's own stream event this chunk was read from, when the request came in the
    # vendor's wire format (``ChatRequest.claude``): a client dialect of that format relays it
    # as it came, what ``choices`` cannot say (signatures, redacted thinking) included.
    native: dict[str, Any] | None = None


@dataclass(slots=True)
class UsageEvent:
    usage: Usage


# A text a renderer may render a ``TextShape``'s chunk with, to find where the text goes: it
# needs no escape in JSON, and private-use characters are in no vendor's answer.
TEXT_PROBE = "\ue000siraya-text\ue001"


class TextShape:
    """A text chunk of one stream as a template: one choice whose delta holds ``content`` (and
    perhaps the role), no finish reason, the same ``extra``; chunks of the shape differ only in
    their text. Renderers may keep, per shape, their rendering cut at the text (``TextRun``)."""

    __slots__ = ("choice", "delta", "extra")

    def __init__(self, choice: dict[str, Any], delta: dict[str, Any], extra: dict[str, Any] | None) -> None:
        self.choice = choice
        self.delta = delta
        self.extra = extra

    def choices(self, text: str) -> list[dict[str, Any]]:
        """The ``choices`` of the shape's chunk that carries ``text``."""
        return [{**self.choice, "delta": {**self.delta, "content": text}}]


@dataclass(slots=True)
class TextRun:
    """Consecutive chunks of one ``shape`` (the usual middle of a stream), one per text.

    Each text needs no escape in a JSON string: ``raws`` are the texts' UTF-8 bytes, which are
    also their JSON string contents, so a dialect can render the run without one JSON call per
    chunk. It stands for exactly the events ``chunks()`` returns.
    """

    shape: TextShape
    texts: list[str]
    raws: list[bytes]

    def chunks(self) -> list[ChunkEvent]:
        shape = self.shape
        return [ChunkEvent(shape.choices(text), shape.extra) for text in self.texts]


StreamEvent = ChunkEvent | UsageEvent | TextRun


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) answer."""

    choices: list[dict[str, Any]]
    usage: Usage | None
    extra: dict[str, Any] | None = None
    # The vendor's own answer object, on the same terms as ``ChunkEvent.native``.
    native: dict[str, Any] | None = None


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


@dataclass(frozen=True, slots=True)
class EmbeddingCall:
    """One ``/v1/embeddings`` request as one deployment is asked it.

    ``inputs`` are strings or token arrays (never both); the answer has one vector per input,
    in order. An adapter batches them as its vendor allows (one call, several, or one per input).
    """

    inputs: tuple[str, ...] | tuple[tuple[int, ...], ...]
    upstream_model: str
    generation_id: str
    dimensions: int | None = None
    user: str | None = None


@dataclass(slots=True)
class Embeddings:
    """A vendor's answer to an ``EmbeddingCall``: one float vector per input, in input order."""

    vectors: list[list[float]]
    # The input tokens the vendor reported (summed over its calls), None when it reports none.
    prompt_tokens: int | None = None


# Words that setting names spell in capitals when shown to people.
_ACRONYMS = {"api": "API", "url": "URL", "id": "ID", "aws": "AWS", "json": "JSON"}
# Command-line flags whose name is not the setting's (the JSON key is read from a file).
_FLAGS = {"credentials_json": "--credentials-file"}


def setting_label(name: str) -> str:
    """Return a setting's name for people: ``aws_access_key_id`` is "AWS access key ID"."""
    words = [_ACRONYMS.get(word, word) for word in name.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def setting_flag(name: str) -> str:
    """Return a setting's ``manage.py vendor`` flag: ``api_style`` is ``--api-style``."""
    return _FLAGS.get(name) or "--" + name.replace("_", "-")


@dataclass(frozen=True)
class OptionSpec:
    """How an option is offered to the operator, by the admin form and ``manage.py vendor --help`` alike."""

    # (value, label) pairs: a select in the form; the value "" stands for "not set".
    choices: tuple[tuple[str, str], ...] = ()
    # The value the adapter uses when the option is not set.
    default: str = ""
    help: str = ""

    def describe(self, choices: bool = True) -> str:
        """Return the help, the choices and the default in a few words (the form's help and the command's)."""
        parts = [self.help] if self.help else []
        values = [value for value, _ in self.choices if value]
        if values and choices:
            parts.append("One of " + ", ".join(values) + ".")
        if self.default:
            parts.append(f"Default {self.default}.")
        return " ".join(parts)


@dataclass(frozen=True)
class SettingProblem:
    """One reason a vendor configuration cannot work, at the setting it concerns.

    ``message`` names settings as ``{setting}``: the admin form shows them as labels
    ("API style"), the command as flags (``--api-style``). It never quotes a value.
    """

    setting: str | None  # base_url, an option or a secret; None: the configuration as a whole
    message: str

    @classmethod
    def literal(cls, setting: str | None, text: str) -> SettingProblem:
        """A problem whose text names no setting (an error message from elsewhere, braces and all)."""
        return cls(setting, text.replace("{", "{{").replace("}", "}}"))

    def for_people(self) -> str:
        text = self.message.format_map(_Names(setting_label))
        return text[:1].upper() + text[1:]

    def for_command(self) -> str:
        return self.message.format_map(_Names(setting_flag))


class _Names(dict[str, str]):
    def __init__(self, name: Any) -> None:
        super().__init__()
        self.name = name

    def __missing__(self, key: str) -> str:
        return str(self.name(key))


class VendorSettingsInvalid(ValueError):
    """The configuration's problems, all of them; as a one-line message, in the command's words."""

    def __init__(self, problems: list[SettingProblem]) -> None:
        super().__init__("; ".join(problem.for_command() for problem in problems))
        self.problems = problems


class VendorAdapter(ABC):
    """One vendor kind's wire format. Instances are per vendor and may cache (tokens, signers)."""

    kind: ClassVar[str]
    # Options the kind accepts besides base_url; secrets are kept encrypted.
    option_names: ClassVar[tuple[str, ...]] = ()
    secret_names: ClassVar[tuple[str, ...]] = ("api_key",)
    # False where the vendor's ``max_tokens`` bounds the answer but not its reasoning (ModelArk).
    max_tokens_counts_reasoning: ClassVar[bool] = True
    # What the admin form shows for the base URL: an example of this kind's, and what blank means.
    base_url_example: ClassVar[str] = ""
    base_url_help: ClassVar[str] = "The vendor's API root."
    # Options with choices or a default (the others are free text without one).
    option_specs: ClassVar[Mapping[str, OptionSpec]] = {}

    def __init__(self, vendor: VendorConfig) -> None:
        self.vendor = vendor

    @classmethod
    def validate(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> None:
        """Raise ``VendorSettingsInvalid`` (a ``ValueError``) when the vendor cannot work as configured."""
        problems = cls.problems(base_url, options, credentials)
        if problems:
            raise VendorSettingsInvalid(problems)

    @classmethod
    def problems(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[SettingProblem]:
        """Return every reason the vendor cannot work as configured (none: it can)."""
        return []

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

        The router's safety-net cut (``routing.relay.limits``) counts what the vendor counts,
        and the credit hold adds a reasoning allowance where it does not (``billing.credit``).
        """
        return cls.max_tokens_counts_reasoning or not request.max_tokens_only

    @abstractmethod
    def stream(self, call: UpstreamCall) -> AsyncIterator[list[StreamEvent]]:
        """Yield the answer as batches of events (one per network read); raise ``UpstreamError`` on failure."""

    @abstractmethod
    async def complete(self, call: UpstreamCall) -> Completion:
        """Return the whole answer; raise ``UpstreamError`` on failure."""

    # Whether ``embed`` is implemented: the router refuses an embedding model on a kind without it.
    serves_embeddings: ClassVar[bool] = False

    async def embed(self, call: EmbeddingCall) -> Embeddings:
        """Return one vector per input of ``call``; raise ``UpstreamError`` on failure.

        Only kinds with ``serves_embeddings`` implement it; the router never calls it on the others.
        """
        raise NotImplementedError(f"{self.kind} adapters serve no embeddings")
