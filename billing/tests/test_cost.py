"""Cost arithmetic: Decimal end to end, rounded once to 8 places, no charge for vendor failures."""

from __future__ import annotations

from decimal import Decimal

from billing.cost import Prices, TokenCounts, cost_compute
from billing.credit import worst_case_cost
from billing.errors import usd
from routing.models import RouterModel
from routing.selectors import model_prices


def prices(input="1", output="2", cached=None, reasoning=None, request="0") -> Prices:
    return Prices(
        Decimal(input),
        Decimal(output),
        Decimal(cached if cached is not None else input),
        Decimal(reasoning if reasoning is not None else output),
        Decimal(request),
    )


def test_cost_is_tokens_times_price_per_million():
    assert cost_compute(prices("2.5", "10"), TokenCounts(1000, 500)) == Decimal("0.0075")


def test_cost_is_rounded_once_half_up_to_eight_places():
    # 1 token at $0.015/Mtok = $0.000000015 -> 0.00000002 (half up); rounding each part first would give 0.
    assert cost_compute(prices("0.015", "0.005"), TokenCounts(1, 1)) == Decimal("0.00000002")
    assert cost_compute(prices("0.004", "0"), TokenCounts(1, 0)) == Decimal("0")
    assert cost_compute(prices("0.005", "0"), TokenCounts(1, 0)) == Decimal("0.00000001")
    assert cost_compute(prices("0.1", "0.3"), TokenCounts(3, 7)).as_tuple().exponent == -8


def test_cached_and_reasoning_tokens_billed_at_their_own_prices():
    cost = cost_compute(
        prices("1", "4", cached="0.25", reasoning="8"), TokenCounts(1000, 600, cached=400, reasoning=100)
    )
    assert cost == (Decimal(600) * 1 + Decimal(400) * Decimal("0.25") + Decimal(500) * 4 + Decimal(100) * 8) / 10**6


def test_per_request_price_is_added():
    assert cost_compute(prices("1", "1", request="0.002"), TokenCounts(10, 10)) == Decimal("0.00202")


def test_failed_request_with_zero_completion_costs_nothing():
    p = prices("1", "2", request="0.01")
    assert cost_compute(p, TokenCounts(500, 0), failed=True) == 0
    # A failure after some completion is billed for what was produced.
    assert cost_compute(p, TokenCounts(500, 3), failed=True) == Decimal("0.010506")
    # A client that cancels before any token still pays for the prompt (it was not the vendor's fault).
    assert cost_compute(p, TokenCounts(500, 0)) == Decimal("0.0105")


def test_reasoning_defaults_to_output_price_and_cached_to_input():
    model = RouterModel(name="m", input_price=Decimal("3"), output_price=Decimal("15"))
    p = model_prices(model)
    assert (p.cached_input, p.reasoning, p.request) == (Decimal("3"), Decimal("15"), Decimal("0"))


def test_worst_case_uses_the_dearer_price_of_each_kind():
    p = prices("1", "2", cached="0.5", reasoning="6", request="0.001")
    worst = worst_case_cost(p, 1000, 1000)
    assert worst == Decimal("0.001") + Decimal("0.001") + Decimal("0.006")
    for counts in (TokenCounts(1000, 1000), TokenCounts(1000, 1000, 1000, 1000), TokenCounts(1000, 1000, 0, 1000)):
        assert cost_compute(p, counts) <= worst


def test_usd_formats_for_people():
    assert usd(Decimal("5")) == "$5.00"
    assert usd(Decimal("0.1")) == "$0.10"
    assert usd(Decimal("0.00012345")) == "$0.00012345"
    assert usd(Decimal("1E+1")) == "$10.00"
