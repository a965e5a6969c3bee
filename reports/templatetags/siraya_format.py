"""Template filters for the one money format and the one count format of every page (``lib.numbers``).

``{{ value|money }}`` shows USD rounded for reading with the exact figure on hover;
``{{ value|count }}`` shows a count with thousands separators.
"""

from __future__ import annotations

from decimal import Decimal

from django import template
from django.utils.safestring import SafeString

from lib import numbers

register = template.Library()


@register.filter(name="money")
def money(value: Decimal | int | None) -> SafeString:
    return numbers.usd_html(value)


@register.filter(name="count")
def count(value: int | None) -> str:
    return numbers.count(value)
