"""A usage record's attempts (one per vendor tried) as a table for people, in the admin and the reports.

The relay records each attempt as a dict of machine names (``latency_ms``, ``vendor_status``);
this module names them for people and keeps their order, so both pages read the same.
"""

from __future__ import annotations

from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

# Known fields in the order they read best; any other field follows under its own name.
ATTEMPT_COLUMNS = {
    "vendor": "Vendor",
    "upstream_model": "Upstream model",
    "deployment": "Deployment",
    "outcome": "Outcome",
    "latency_ms": "Latency",
    "status": "HTTP status",
    "code": "Error code",
    "vendor_status": "Vendor's HTTP status",
    "vendor_code": "Vendor's error code",
    "message": "Message",
}
_UNITS = {"latency_ms": "ms"}


def _label(name: str) -> str:
    return ATTEMPT_COLUMNS.get(name) or name.replace("_", " ").capitalize()


def _cell(name: str, value: Any) -> str:
    if value is None or value == "":
        return "\N{EN DASH}"
    if name in _UNITS and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,} {_UNITS[name]}"
    return str(value)


def attempt_columns(attempts: list[Any]) -> list[str]:
    """Return the fields present in any attempt: the known ones in their order, then the others."""
    present = {name for attempt in attempts if isinstance(attempt, dict) for name in attempt}
    others = sorted(present - ATTEMPT_COLUMNS.keys())
    return [name for name in ATTEMPT_COLUMNS if name in present] + others


def attempts_table(attempts: Any, table_id: str = "", css_class: str = "attempts") -> SafeString:
    """Return the attempts as an HTML table (escaped) with a numbered row per attempt."""
    rows = attempts if isinstance(attempts, list) else []
    if not rows:
        return format_html('<p class="muted">{}</p>', "No upstream attempt recorded.")
    columns = attempt_columns(rows)
    head = format_html_join("", "<th>{}</th>", ((_label(name),) for name in columns))
    body = format_html_join(
        "",
        "<tr><td>{}</td>{}</tr>",
        (
            (
                number,
                format_html_join("", "<td>{}</td>", ((_cell(n, a.get(n)),) for n in columns))
                if isinstance(a, dict)
                else format_html('<td colspan="{}">{}</td>', max(len(columns), 1), a),
            )
            for number, a in enumerate(rows, start=1)
        ),
    )
    id_attr = format_html(' id="{}"', table_id) if table_id else ""
    return format_html(
        '<table class="{}"{}><thead><tr><th>#</th>{}</tr></thead><tbody>{}</tbody></table>',
        css_class,
        id_attr,
        head,
        body,
    )
