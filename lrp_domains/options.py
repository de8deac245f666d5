"""Typed run options: what each option of a domain explainer accepts, read from command-line strings
and checked before a run touches its folder.

An explainer declares its options' defaults in ``run_options`` and, where the default does not say
the type, an :class:`Option` in ``option_types``. Booleans read ``true/false``, ``yes/no``,
``on/off`` and ``1/0`` (any case); anything else is an error naming the option and the accepted
values, never a truthy string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lrp_domains.errors import InputError

TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")
KINDS = ("bool", "int", "float", "choice", "text", "target")


@dataclass(frozen=True)
class Option:
    """One option's type: ``bool``, ``int`` or ``float`` (with an optional ``minimum``),
    ``choice`` (one of ``choices``), ``text`` (any string), ``target`` (a class index or a name).
    ``optional``: None (the default) is accepted too."""

    kind: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    optional: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Option kind must be one of {KINDS}, got {self.kind!r}")

    def accepted(self) -> str:
        """The accepted values, in words."""
        if self.kind == "bool":
            return "true/false (also yes/no, on/off, 1/0)"
        if self.kind == "choice":
            return " or ".join(self.choices)
        if self.kind in ("int", "float"):
            number = "an integer" if self.kind == "int" else "a number"
            return number + (f" >= {self.minimum:g}" if self.minimum is not None else "")
        if self.kind == "target":
            return "a class index or name"
        return "a text"

    def parse(self, name: str, value: Any) -> Any:
        """``value`` (a command-line string, or a Python value) as this option's type; an
        InputError naming the option and the accepted values otherwise."""
        if value is None:
            if self.optional:
                return None
            raise InputError(f"option {name} needs a value: {self.accepted()}")
        wrong = InputError(f"option {name}={value!r}: give {self.accepted()}")
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if isinstance(value, (str, int)) and text in TRUE + FALSE:
                return text in TRUE
            raise wrong
        if self.kind in ("int", "float"):
            return self._number(value, wrong)
        if self.kind == "choice":
            if str(value) not in self.choices:
                raise wrong
            return str(value)
        if self.kind == "target":
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                return value  # per-example targets and callables, from the Python API
            if isinstance(value, str):
                stripped = value.strip()
                if not stripped:
                    raise wrong
                return int(stripped) if stripped.lstrip("-").isdigit() else stripped
            return value
        if not isinstance(value, str) or not value.strip():
            raise wrong
        return value

    def _number(self, value: Any, wrong: InputError) -> int | float:
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, str):
            try:
                number: int | float = int(value.strip()) if self.kind == "int" else float(value.strip())
            except ValueError:
                raise wrong from None
        elif isinstance(value, int) or (self.kind == "float" and isinstance(value, float)):
            number = value
        else:
            raise wrong
        if self.kind == "float" and number != number:  # NaN
            raise wrong
        if self.minimum is not None and number < self.minimum:
            raise wrong
        return number


#: Every explainer's ``target`` and ``batch_size``.
COMMON = {"target": Option("target"), "batch_size": Option("int", minimum=1)}


def option_type(explainer: Any, name: str) -> Option:
    """The declared type of option ``name`` of an explainer (class or object): its
    ``option_types`` entry, else :data:`COMMON`, else read off the default's type."""
    declared = getattr(explainer, "option_types", {}) or {}
    if name in declared:
        return declared[name]
    if name in COMMON:
        return COMMON[name]
    default = getattr(explainer, "run_options", {}).get(name)
    if isinstance(default, bool):
        return Option("bool")
    if isinstance(default, int):
        return Option("int")
    if isinstance(default, float):
        return Option("float")
    return Option("text")


def parse_options(explainer: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` options checked and converted to their declared types (unknown names refused,
    naming the known ones)."""
    known = getattr(explainer, "run_options", {})
    unknown = sorted(set(given) - set(known))
    if unknown:
        kind = getattr(explainer, "kind", "this")
        raise InputError(
            f"a {kind} run takes no option {', '.join(map(repr, unknown))}; its options are {', '.join(sorted(known))}"
        )
    return {name: option_type(explainer, name).parse(name, value) for name, value in given.items()}
