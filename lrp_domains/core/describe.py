"""What defines a composite, as plain JSON data that any process computes alike.

A run's manifest must say which rules explained it, so that the same command in another process
resumes it and another composite is refused. ``repr`` is no good for that: a predicate's repr is
``<function is_rms_norm at 0x7f...>``, an address that changes with every process. Here every
part is described by what defines it: classes and functions by their qualified names, rules and
canonizers by their class and parameters, closures by the values they close over, tensors by
their values (or a digest of them).
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Any

import torch

__all__ = ["describe", "describe_composite"]

#: Tensors with at most this many entries are listed; larger ones are described by a digest.
LISTED_ENTRIES = 16


def _qualified(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__qualname__
    return f"{module}.{name}" if module else name


def _number(value: float) -> float | str:
    # JSON has no NaN or infinity; their names compare alike in every process.
    return value if math.isfinite(value) else repr(value)


def _tensor(value: torch.Tensor) -> dict[str, Any]:
    flat = value.detach().cpu().reshape(-1)
    described: dict[str, Any] = {"dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape)}
    if flat.numel() <= LISTED_ENTRIES:
        described["values"] = [_number(float(v)) for v in flat.double().tolist()]
    else:
        described["sha256"] = hashlib.sha256(flat.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
    return described


def _function(func: Any, seen: set[int]) -> Any:
    name = _qualified(func)
    code = getattr(func, "__code__", None)
    cells = getattr(func, "__closure__", None)
    if code is None or not cells:
        return name
    closed = {}
    for variable, cell in zip(code.co_freevars, cells):
        try:
            closed[variable] = describe(cell.cell_contents, seen)
        except ValueError:  # an empty cell
            closed[variable] = None
    return {"function": name, "closure": closed}


def describe(value: Any, _seen: set[int] | None = None) -> Any:
    """``value`` as JSON data that depends only on what defines it (never on an address).

    Numbers, strings and None stay as they are; lists, tuples and dicts are described item by
    item; classes and functions by their qualified names (a closure with the values it closes
    over); ``functools.partial`` by its function and arguments; tensors by dtype, shape and values
    (a SHA-256 of the bytes when large); any other object by its class and its public attributes.
    """
    seen = set() if _seen is None else _seen
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, torch.Tensor):
        return _tensor(value)
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, type):
        return _qualified(value)
    if id(value) in seen:  # a cycle: name it instead of recursing
        return f"<cycle: {type(value).__qualname__}>"
    seen = seen | {id(value)}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [describe(v, seen) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, dict):
        return {str(describe(k, seen)): describe(v, seen) for k, v in value.items()}
    if isinstance(value, functools.partial):
        return {
            "partial": describe(value.func, seen),
            "args": describe(value.args, seen),
            "keywords": describe(value.keywords, seen),
        }
    if callable(value) and hasattr(value, "__qualname__"):  # functions, methods, builtins
        return _function(value, seen)
    attributes = (
        {key: describe(item, seen) for key, item in sorted(vars(value).items()) if not key.startswith("_")}
        if hasattr(value, "__dict__")
        else {}
    )
    return {"type": _qualified(type(value)), **attributes} if attributes else _qualified(type(value))


def describe_composite(composite: Any) -> dict[str, Any]:
    """A composite's rules as JSON data: each key (module types, a module name, a predicate's
    qualified name) with its rule (class and parameters), the first- and last-layer rules, the
    canonizers and the functional rules. Equal in every process for equal composites, and
    different wherever a rule, a parameter or a key differs."""
    return {
        "name": composite.name,
        "rules": [[describe(key), describe(rule)] for key, rule in composite.rules.items()],
        "first": describe(composite.first),
        "last": describe(composite.last),
        "canonizers": describe(composite.canonizers),
        "functional": {name: describe(handler) for name, handler in sorted(composite.functional.items())},
        "conserves": composite.conserves,
    }
