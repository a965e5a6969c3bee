"""Declarative request fields: each spec validates a parsed JSON value and describes it as JSON Schema.

API-neutral: a client dialect declares its request with these kinds, calls ``validate`` on the
parsed body and maps ``Invalid`` to its own error shape; its OpenAPI document takes ``schema()``
from the same declaration, so the two cannot disagree.

A valid value costs a type check per field and comes back as it came (copied only where a
default or fallback filled a member); a refused field's path is assembled only on refusal.
``None`` counts as absent everywhere: an optional member may be null, a required one may not.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from routing.dialects.faults import Fault, Message
from routing.dialects.fields import Field, RequiredUnless
from routing.dialects.unroll import unrolled_check

Schema = dict[str, Any]


class Spec:
    """One kind of JSON value: ``validate`` returns the clean value, ``schema`` its JSON Schema."""

    label = "a value"
    # Python types whose every value this spec takes as sent: a container checks them inline.
    quick: tuple[type, ...] = ()
    # Strings this spec takes as sent, tested inline by a container (an enum's values).
    choices_inline: frozenset[str] | None = None
    messages: ClassVar[dict[str, Message]] = {
        "type": ("'{path}' must be {spec.label}.", "invalid_type"),
        "missing": ("'{path}' is required.", "missing"),
    }

    def __init__(
        self,
        *,
        description: str | None = None,
        message: Message | None = None,
        errors: Mapping[str, Message] | None = None,
        atomic: bool = False,
    ) -> None:
        self.description = description
        # ``message`` replaces every message of this spec; ``errors`` the message of one reason.
        self.message = message
        self.errors = dict(errors or {})
        # An atomic member reports a fault anywhere inside it as its own (same reason, its path).
        self.atomic = atomic

    def validate(self, value: Any) -> Any:
        """Return the clean value, or raise ``Invalid`` naming the offending field."""
        try:
            return self.check(value)
        except Fault as fault:
            raise fault.invalid() from None

    def check(self, value: Any) -> Any:
        """Return the clean value, or raise ``Fault``."""
        raise NotImplementedError

    def schema(self) -> Schema:
        return _given(**self.shape(), description=self.description)

    def shape(self) -> Schema:
        raise NotImplementedError

    def message_for(self, reason: str) -> Message:
        return self.errors.get(reason) or self.message or self.messages.get(reason) or self.messages["type"]


class AnyJson(Spec):
    """Any JSON value, taken as sent (a parameter forwarded for the vendor to judge)."""

    def check(self, value: Any) -> Any:
        return value

    def shape(self) -> Schema:
        return {}


class Boolean(Spec):
    label = "a boolean"
    quick = (bool,)

    def check(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise Fault(self, "type", value)
        return value

    def shape(self) -> Schema:
        return {"type": "boolean"}


class String(Spec):
    label = "a string"
    messages = {
        **Spec.messages,
        "short": ("'{path}' must be at least {spec.min_length} characters.", "invalid_value"),
        "long": ("'{path}' is at most {spec.max_length} characters.", "invalid_value"),
    }

    def __init__(self, min_length: int = 0, max_length: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.min_length = min_length
        self.max_length = max_length
        self.quick = () if min_length or max_length is not None else (str,)

    def check(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise Fault(self, "type", value)
        if len(value) < self.min_length:
            raise Fault(self, "short", value)
        if self.max_length is not None and len(value) > self.max_length:
            raise Fault(self, "long", value)
        return value

    def shape(self) -> Schema:
        return _given(type="string", minLength=self.min_length or None, maxLength=self.max_length)


class Enum(Spec):
    """One of a few strings; anything else, of any type, is refused in the same words."""

    _ONE_OF: Message = ("'{path}' must be one of {spec.choices}; got {shown!r}.", "invalid_value")
    messages = {"type": _ONE_OF, "missing": _ONE_OF}

    def __init__(self, values: set[str] | frozenset[str], **options: Any) -> None:
        super().__init__(**options)
        self.values = self.choices_inline = frozenset(values)
        self.choices = sorted(values)

    def check(self, value: Any) -> Any:
        if not isinstance(value, str) or value not in self.values:
            raise Fault(self, "type", value)
        return value

    def shape(self) -> Schema:
        return {"enum": list(self.choices)}


class Number(Spec):
    """A finite number within a closed range."""

    label = "a number"
    messages = {
        **Spec.messages,
        "range": ("'{path}' must be between {spec.minimum:g} and {spec.maximum:g}; got {value}.", "invalid_value"),
    }

    def __init__(self, minimum: float, maximum: float, **options: Any) -> None:
        super().__init__(**options)
        self.minimum = minimum
        self.maximum = maximum

    def check(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Fault(self, "type", value)
        if not self.minimum <= value <= self.maximum:
            raise Fault(self, "range", value)
        return value

    def shape(self) -> Schema:
        return {"type": "number", "minimum": self.minimum, "maximum": self.maximum}


class Integer(Number):
    """An integer within a closed range, optionally limited to the few ``choices`` served today."""

    label = "an integer"
    messages = {
        **Spec.messages,
        "range": ("'{path}' must be between {spec.minimum} and {spec.maximum}; got {value}.", "invalid_value"),
        "choice": ("'{path}' must be one of {spec.choices}; got {value}.", "invalid_value"),
    }

    def __init__(self, minimum: int, maximum: int, choices: tuple[int, ...] | None = None, **options: Any) -> None:
        super().__init__(minimum, maximum, **options)
        self.choices = choices

    def check(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Fault(self, "type", value)
        if not self.minimum <= value <= self.maximum:
            raise Fault(self, "range", value)
        if self.choices is not None and value not in self.choices:
            raise Fault(self, "choice", value)
        return value

    def shape(self) -> Schema:
        return _given(
            type="integer", minimum=self.minimum, maximum=self.maximum, enum=self.choices and list(self.choices)
        )


class Array(Spec):
    label = "an array"
    messages = {
        **Spec.messages,
        "few": ("'{path}' must have at least {spec.min_items} entries.", "invalid_value"),
        "many": ("'{path}' has more than {spec.max_items} entries.", "invalid_value"),
    }

    def __init__(self, items: Spec | None = None, min_items: int = 0, max_items: int | None = None, **options: Any):
        super().__init__(**options)
        self.items = items
        self.min_items = min_items
        self.max_items = max_items
        self.quick = () if items or min_items or max_items is not None else (list,)
        self.most = sys.maxsize if max_items is None else max_items
        self.item_check = None if items is None else items.check

    def check(self, value: Any) -> Any:
        if not isinstance(value, list):
            raise Fault(self, "type", value)
        if not self.min_items <= len(value) <= self.most:
            raise Fault(self, "few" if len(value) < self.min_items else "many", value)
        if (check := self.item_check) is None:
            return value
        out = value
        for i, item in enumerate(value):
            try:
                clean = check(item)
            except Fault as fault:
                fault.path.append(i)
                raise
            if clean is not item:
                if out is value:
                    out = list(value)
                out[i] = clean
        return out

    def shape(self) -> Schema:
        items = None if self.items is None else self.items.schema()
        return _given(type="array", items=items, minItems=self.min_items or None, maxItems=self.max_items)


class Object(Spec):
    label = "an object"
    messages = {
        **Spec.messages,
        "unknown": ("Unrecognized request argument supplied: {path}", "unknown_parameter"),
    }

    def __init__(
        self, fields: Mapping[str, Spec | Field] | None = None, additional: bool = True, **options: Any
    ) -> None:
        super().__init__(**options)
        # Members are checked in this order, so the first fault found is the one reported.
        self.fields = {name: f if isinstance(f, Field) else Field(f) for name, f in (fields or {}).items()}
        self.names = frozenset(self.fields)
        self.quick = () if self.fields or not additional else (dict,)
        self.additional = additional  # members not declared are kept as sent, or refused
        # Members taken as sent with nothing to fill in cost nothing: they are not visited.
        visited = [(name, f) for name, f in self.fields.items() if not (type(f.spec) is AnyJson and f.plain)]
        # The compiled check stands in for the method on this instance (see routing.dialects.unroll).
        self.check = unrolled_check(self, visited, closed=not additional)  # type: ignore[method-assign,assignment]

    def shape(self) -> Schema:
        return _given(
            type="object",
            properties={name: field.schema() for name, field in self.fields.items()} or None,
            required=[name for name, field in self.fields.items() if field.required is True] or None,
            additionalProperties=None if self.additional else False,
            allOf=[f.required.schema(name) for name, f in self.fields.items() if isinstance(f.required, RequiredUnless)]
            or None,
        )


class Tagged(Spec):
    """An object whose string ``tag`` member picks the variant that checks the rest; another tag
    passes as sent, or with ``closed`` is refused (and the document lists the tags)."""

    label = "an object"
    messages = {
        **Spec.messages,
        "type": ("'{path}' must be an object with a '{spec.tag}'.", "invalid_value"),
        "variant": ("'{path}' must be one of {spec.tags}; got {shown!r}.", "unsupported_value"),
    }

    def __init__(self, tag: str, variants: Mapping[str, Object], closed: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.tag = tag
        self.variants = dict(variants)
        self.variant_checks = {kind: variant.check for kind, variant in variants.items()}
        self.closed = closed
        self.tags = ", ".join(repr(kind) for kind in sorted(variants))

    def check(self, value: Any) -> Any:
        if not isinstance(value, dict) or not isinstance(kind := value.get(self.tag), str):
            raise Fault(self, "type", value)
        check = self.variant_checks.get(kind)
        if check is None and self.closed:
            fault = Fault(self, "variant", kind)
            fault.path.append(self.tag)  # the tag is the member at fault
            raise fault
        return value if check is None else check(value)

    def shape(self) -> Schema:
        # One alternative per tag, the tag a constant in it (and, open, one for every other tag):
        # ``if``/``then`` per tag said the same, but schemathesis gave up generating for seven of them.
        cases = [self._variant(kind, variant) for kind, variant in self.variants.items()]
        if not self.closed:
            other = {self.tag: {"type": "string", "not": {"enum": sorted(self.variants)}}}
            cases.append({"type": "object", "required": [self.tag], "properties": other})
        return _given(oneOf=cases) if cases else _given(type="object", required=[self.tag])

    def _variant(self, kind: str, variant: Object) -> Schema:
        schema = dict(variant.schema())
        schema["properties"] = {**schema.get("properties", {}), self.tag: {"const": kind}}
        schema["required"] = [self.tag, *(name for name in schema.get("required", ()) if name != self.tag)]
        return schema


class OneOf(Spec):
    """A value of one of several JSON types; the value's type picks the alternative."""

    _ACCEPTS: ClassVar[dict[type[Spec], tuple[type, ...]]] = {
        Boolean: (bool,),
        String: (str,),
        Enum: (str,),
        Number: (int, float),
        Integer: (int,),
        Array: (list,),
    }

    def __init__(self, *alternatives: Spec, **options: Any) -> None:
        super().__init__(**options)
        self.alternatives = alternatives
        self.dispatch: dict[type, Callable[[Any], Any]] = {}
        for alternative in alternatives:
            for kind in self._ACCEPTS.get(type(alternative), (dict,)):
                self.dispatch.setdefault(kind, alternative.check)
        self.label = " or ".join(alternative.label for alternative in alternatives)
        self.quick = tuple(kind for alternative in alternatives for kind in alternative.quick)

    def check(self, value: Any) -> Any:
        check = self.dispatch.get(type(value))
        if check is None:
            raise Fault(self, "type", value)
        return check(value)

    def shape(self) -> Schema:
        return {"oneOf": [alternative.schema() for alternative in self.alternatives]}


def _given(**members: Any) -> Schema:
    """Return a JSON Schema of the members that are set (None: not set)."""
    return {name: value for name, value in members.items() if value is not None}
