"""``{% attempts_table record.attempts %}``: a usage record's attempts as a table for people."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString

from billing.attempts import attempts_table as render_attempts_table

register = template.Library()


@register.simple_tag
def attempts_table(attempts: Any, table_id: str = "", css_class: str = "attempts") -> SafeString:
    return render_attempts_table(attempts, table_id, css_class)
