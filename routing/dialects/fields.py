"""Members of an object spec: what a member's absence means, and how that is documented."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from routing.dialects.faults import Fault

if TYPE_CHECKING:
    from routing.dialects.spec import Schema, Spec


class RequiredUnless:
    """A rule for a member required unless ``member`` holds one of ``values`` or ``given`` is sent (not blank)."""

    def __init__(self, member: str, values: set[str], given: str) -> None:
        self.member = member
        self.values = frozenset(values)
        self.given = given

    def __call__(self, obj: Mapping[str, Any]) -> bool:
        return obj.get(self.member) not in self.values and not obj.get(self.given)

    def schema(self, name: str) -> Schema:
        blank: Schema = {"enum": [None, False, 0, "", [], {}]}
        cases = [
            (name, {"not": {"type": "null"}}),
            (self.member, {"enum": sorted(self.values)}),
            (self.given, {"not": blank}),
        ]
        return {"anyOf": [{"required": [member], "properties": {member: rule}} for member, rule in cases]}


class Field:
    """A named member of an object: its spec, and what its absence means."""

    __slots__ = ("blank_is_absent", "default", "fallback", "plain", "required", "spec")

    def __init__(
        self,
        spec: Spec,
        required: bool | Callable[[Mapping[str, Any]], bool] = False,
        default: Any = None,
        blank_is_absent: bool = False,
        fallback: Callable[[Mapping[str, Any]], Any] | None = None,
    ) -> None:
        self.spec = spec
        # True, or a rule over the raw object (documented when it is a ``RequiredUnless``).
        self.required = required
        self.default = default
        # "", 0, false, [] and {} count as absent, as null does.
        self.blank_is_absent = blank_is_absent
        # Derives the value from the members checked before it when it is absent or of the wrong type.
        self.fallback = fallback
        # Absence needs no work: nothing required, filled in or derived.
        self.plain = required is False and default is None and fallback is None

    def absent(self, name: str, value: Any, obj: Mapping[str, Any], clean: Mapping[str, Any]) -> Any:
        """Return the value standing in for an absent member, or raise its fault."""
        if self.fallback is not None and (derived := self.fallback(clean)) is not None:
            return derived
        if self.required is True or (callable(self.required) and self.required(obj)):
            fault = Fault(self.spec, "missing", value, obj)
            fault.path.append(name)
            raise fault
        return self.default

    def recover(self, name: str, fault: Fault, value: Any, clean: Mapping[str, Any]) -> Any:
        """Return the fallback for a value of the wrong type, or raise the fault as this member's."""
        spec = self.spec
        if self.fallback is not None and fault.spec is spec and fault.reason == "type":
            if (derived := self.fallback(clean)) is not None:
                return derived
        if spec.atomic and fault.spec is not spec:
            fault = Fault(spec, fault.reason, value)
        fault.path.append(name)
        raise fault

    def schema(self) -> Schema:
        out = self.spec.schema() if self.required is True else nullable(self.spec.schema())
        if self.default is not None:
            out["default"] = self.default
        return out


def nullable(schema: Schema) -> Schema:
    """Return ``schema`` widened to accept null (an optional member may be sent as null)."""
    out = dict(schema)
    if isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    if "oneOf" in out:
        out["oneOf"] = [*out["oneOf"], {"type": "null"}]
    return out
