"""Why billing refuses a request: domain errors that carry data, never an HTTP status.

Each client API maps them to its own error shape and status at its edge
(``routing.errors.refusal_error``, then the API's dialect). ``message`` is the router's own
words for people, the same in every API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


class BillingRefusal(Exception):
    """A request billing will not admit. ``code`` is stable; ``message`` is for people."""

    code = "refused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class KeyRefused(BillingRefusal):
    """The request's API key is missing, unknown, revoked or expired (``reason``)."""

    _MESSAGES = {
        "missing": "Missing API key: send 'Authorization: Bearer sk-siraya-...'.",
        "invalid": "Invalid API key.",
        "revoked": "This API key has been revoked.",
        "expired": "This API key has expired.",
    }

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or self._MESSAGES[reason])
        self.reason = reason
        self.code = f"{reason}_api_key"


def usd(amount: Decimal) -> str:
    """Format USD for people: at least cents, no trailing zeros beyond them."""
    text = format(amount.quantize(Decimal("0.00000001")).normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


@dataclass(frozen=True, slots=True)
class CreditTerms:
    limit: Decimal  # USD
    reset: str  # never, daily, weekly, monthly
    remaining: Decimal  # USD left in the period, after holds (never negative)
    worst: Decimal  # USD the request may cost at most
    resets_at: datetime | None


class CreditExceeded(BillingRefusal):
    """The key's credit left in its period cannot cover the request's worst-case cost."""

    code = "credit_limit_exceeded"

    def __init__(self, terms: CreditTerms) -> None:
        when = ""
        if terms.resets_at is not None:
            when = f" The limit resets at {terms.resets_at.isoformat().replace('+00:00', 'Z')}."
        period = "" if terms.reset == "never" else f"{terms.reset} "
        super().__init__(
            f"Credit limit reached: {usd(terms.remaining)} of this key's {usd(terms.limit)} {period}limit remains, "
            f"and this request may cost up to {usd(terms.worst)}. Lower max_tokens or raise the limit.{when}"
        )
        self.terms = terms


class RateLimited(BillingRefusal):
    """The key's requests- or tokens-per-minute window is full (``retry_after`` seconds), or the
    request alone needs more than the window holds (``retry_after`` None: it can never pass)."""

    def __init__(self, message: str, retry_after: int | None, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.code = "rate_limit_exceeded" if retry_after is not None else "request_exceeds_rate_limit"
        self.retry_after = retry_after
        # ``X-RateLimit-*`` figures of the key's windows (``billing.ratelimit.rate_headers``).
        self.headers = headers


class StreamCapReached(BillingRefusal):
    """The key already has ``limit`` streams open."""

    code = "concurrent_streams_exceeded"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This API key already has {limit} concurrent stream{'s' if limit != 1 else ''} open, its limit. "
            "Wait for one to finish."
        )
        self.limit = limit


class LimiterUnavailable(BillingRefusal):
    """A limit that fails closed (``billing.shared_redis``) could not be checked; the store's
    address and failure stay in the log."""

    _WORDS = {
        "rate_limit": ("rate_limiter_unavailable", "The rate limiter is unavailable; try again shortly."),
        "stream_slots": (
            "stream_limiter_unavailable",
            "The concurrent-stream limiter is unavailable; try again shortly.",
        ),
    }

    def __init__(self, feature: str) -> None:
        code, message = self._WORDS.get(
            feature, ("service_unavailable", "A service the router needs is unavailable; try again shortly.")
        )
        super().__init__(message)
        self.code = code
        self.feature = feature


class DatabaseUnavailable(BillingRefusal):
    """The database did not answer within ``SIRAYA_DB_UNAVAILABLE_SECONDS`` (down, restarting,
    or an SQLite file locked past its busy timeout): the request cannot be admitted now.
    Nothing was billed; the client may try again after ``retry_after`` seconds."""

    code = "database_unavailable"

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("The router's database is unavailable; nothing was billed. Try again shortly.")
        self.retry_after = retry_after
