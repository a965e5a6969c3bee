"""What a refused request value says, and where: the error half of the field library (``spec``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routing.dialects.spec import Spec

# An error message template and its code. Templates are formatted with ``path``, ``value``,
# ``shown`` (a string value cut short, or its type's name), ``obj`` (the object holding the
# field) and ``spec`` (the spec that refused the value).
Message = tuple[str, str]
# Longest client-supplied text quoted back in an error message.
SHOWN_LIMIT = 64


class Invalid(Exception):
    """A value broke its spec; ``param`` is the path of the offending field (None: the whole body)."""

    def __init__(self, message: str, param: str | None, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class Fault(Exception):
    """A refusal on its way out of validation; each container adds its segment of the path.

    Raised and caught inside the library only; ``Spec.validate`` turns it into ``Invalid``.
    """

    def __init__(self, spec: Spec, reason: str, value: Any, obj: Mapping[str, Any] | None = None) -> None:
        self.spec = spec
        self.reason = reason
        self.value = value
        self.obj = obj
        self.path: list[str | int] = []  # innermost segment first

    def invalid(self) -> Invalid:
        path = render_path(self.path)
        template, code = self.spec.message_for(self.reason)
        message = template.format(path=path, value=self.value, shown=shown(self.value), obj=self.obj, spec=self.spec)
        return Invalid(message, path if self.path else None, code)


def shown(value: Any) -> str:
    """Return a value fit to quote in an error message: a string cut short, else its type's name."""
    if isinstance(value, str):
        return value if len(value) <= SHOWN_LIMIT else value[:SHOWN_LIMIT] + "..."
    return type(value).__name__


def render_path(segments: list[str | int]) -> str:
    """Return ``a.b[3].c`` from segments collected innermost first."""
    out = ""
    for segment in reversed(segments):
        if isinstance(segment, int):
            out += f"[{segment}]"
        else:
            out += f".{segment}" if out else segment
    return out
