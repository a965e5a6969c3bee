"""Cost arithmetic. Prices are USD per million tokens; cost is rounded once, here, to 8 places."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

COST_PLACES = Decimal("0.00000001")  # USD; matches UsageRecord.cost's decimal_places
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Prices:
    input: Decimal
    output: Decimal
    cached_input: Decimal
    reasoning: Decimal
    request: Decimal


@dataclass(frozen=True, slots=True)
class TokenCounts:
    prompt: int
    completion: int
    cached: int = 0
    reasoning: int = 0


def cost_compute(prices: Prices, counts: TokenCounts, *, failed: bool = False) -> Decimal:
    """Return the USD cost of ``counts`` at ``prices``.

    A failed request that produced no completion costs nothing: the vendor failed, not the client.
    Cached tokens are part of the prompt and reasoning tokens part of the completion, as
    vendors report them; each part is billed at its own price.
    """
    if failed and counts.completion == 0:
        return Decimal("0")
    cached = min(counts.cached, counts.prompt)
    reasoning = min(counts.reasoning, counts.completion)
    micro = (
        (counts.prompt - cached) * prices.input
        + cached * prices.cached_input
        + (counts.completion - reasoning) * prices.output
        + reasoning * prices.reasoning
    )
    total = micro / _MILLION + prices.request
    return total.quantize(COST_PLACES, rounding=ROUND_HALF_UP)
