"""Compile an object spec's member checks into one function, as ``dataclasses`` compiles ``__init__``.

The relay checks every request: unrolled, a member costs a dict lookup and an inline type or
membership test, where a loop over member records costs several times that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from routing.dialects.faults import Fault, shown

if TYPE_CHECKING:
    from routing.dialects.fields import Field
    from routing.dialects.spec import Spec


def _put(out: dict[str, Any], value: dict[str, Any], name: str, clean: Any) -> dict[str, Any]:
    """Return ``out`` holding ``clean`` for ``name``; the object as sent is copied, never changed."""
    if out is value:
        out = dict(value)
    out[name] = clean
    return out


def _refuse_unknown(spec: Spec, value: dict[str, Any], unknown: set[str]) -> Fault:
    fault = Fault(spec, "unknown", value)
    fault.path.append(shown(min(unknown)))
    return fault


def unrolled_check(spec: Spec, members: Iterable[tuple[str, Field]], closed: bool) -> Callable[[Any], Any]:
    """Return the check of an object ``spec`` over ``members`` (in order); ``closed`` refuses others."""
    env: dict[str, Any] = {"Fault": Fault, "spec": spec, "put": _put, "refuse_unknown": _refuse_unknown}
    lines = ["def check(value):", "    if not isinstance(value, dict):", "        raise Fault(spec, 'type', value)"]
    if closed:
        env["names"] = frozenset(getattr(spec, "names", ()))
        lines += ["    if unknown := value.keys() - names:", "        raise refuse_unknown(spec, value, unknown)"]
    lines += ["    out = value", "    get = value.get"]
    for i, (name, field) in enumerate(members):
        env[f"field{i}"], env[f"check{i}"] = field, field.spec.check
        lines += _member_lines(i, repr(name), field, env)
    lines.append("    return out")
    exec("\n".join(lines), env)
    check: Callable[[Any], Any] = env["check"]
    return check


def _member_lines(i: int, name: str, field: Field, env: dict[str, Any]) -> list[str]:
    # The object is copied only when a member's clean value is not the one sent.
    put = ["        if clean is not item:", f"            out = put(out, value, {name}, clean)"]
    absent = [f"        clean = field{i}.absent({name}, item, value, out)", *put]
    lines = [f"    item = get({name})", "    if item is None:", *(["        pass"] if field.plain else absent)]
    if field.blank_is_absent:
        lines += ["    elif not item:", *absent]
    if field.spec.quick:
        env[f"quick{i}"] = field.spec.quick
        lines += [f"    elif isinstance(item, quick{i}):", "        pass"]
    if field.spec.choices_inline is not None:
        env[f"choices{i}"] = field.spec.choices_inline
        lines += [f"    elif item.__class__ is str and item in choices{i}:", "        pass"]
    return [
        *lines,
        "    else:",
        "        try:",
        f"            clean = check{i}(item)",
        "        except Fault as fault:",
        f"            clean = field{i}.recover({name}, fault, item, out)",
        *put,
    ]
