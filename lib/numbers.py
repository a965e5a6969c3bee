"""How people read money and counts: one format for each, wherever a figure is shown.

Money stays ``Decimal``; it is rounded here, once, for display only. The exact figure is
``usd_exact`` (shown on hover; the CSV export writes the stored value).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django.utils.html import format_html
from django.utils.safestring import SafeString

# No value: a dash, as the report tables show missing figures.
MISSING = "\u2013"
# Below this magnitude a non-zero amount shows as "<$0.0001": more digits would be noise to a reader.
SMALLEST_SHOWN = Decimal("0.0001")
_CENTS = Decimal("0.01")
# Amounts under a dollar keep this many significant digits.
_SIGNIFICANT = 4


def _as_decimal(value: Decimal | int | str) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def _under_a_dollar(amount: Decimal) -> str:
    """``amount`` in [0.0001, 1) to four significant digits, at least two decimals: 0.5 -> 0.50, 0.012345 -> 0.01235."""
    places = _SIGNIFICANT - 1 - amount.adjusted()  # adjusted(): exponent of the first significant digit
    text = format(amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP), "f")
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.rstrip('0').ljust(2, '0')}"


def usd(value: Decimal | int | str | None) -> str:
    """Return ``value`` (USD) as people read it: ``$1,234.50``, ``$0.01235``, ``<$0.0001``, ``-$2.00``.

    Two decimals from one dollar up, four significant digits below, ``<$0.0001`` for anything
    smaller but not zero. Rounded half up, once, here.
    """
    if value is None:
        return MISSING
    amount = _as_decimal(value)
    sign = "-" if amount < 0 else ""
    magnitude = abs(amount)
    if magnitude == 0:
        return "$0.00"
    if magnitude < SMALLEST_SHOWN:
        return f">-${SMALLEST_SHOWN}" if sign else f"<${SMALLEST_SHOWN}"
    rounded = magnitude.quantize(_CENTS, rounding=ROUND_HALF_UP)
    if rounded >= 1:
        return f"{sign}${rounded:,.2f}"
    return f"{sign}${_under_a_dollar(magnitude)}"


def usd_exact(value: Decimal | int | str | None) -> str:
    """Return ``value`` (USD) with every stored digit: ``$0.00001234``, ``-$0.50000000``."""
    if value is None:
        return MISSING
    amount = _as_decimal(value)
    sign = "-" if amount < 0 else ""
    return f"{sign}${format(abs(amount), 'f')}"


def count(value: int | None) -> str:
    """Return a count with thousands separators: ``1,234,567``."""
    if value is None:
        return MISSING
    return f"{value:,}"


def usd_html(value: Decimal | int | None) -> SafeString:
    """``usd(value)`` for a page, the exact figure in its title attribute (shown on hover)."""
    if value is None:
        return format_html("{}", MISSING)
    return format_html('<span class="money" title="{}">{}</span>', usd_exact(value), usd(value))
