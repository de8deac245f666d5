"""Coverage: the operations on input-dependent tensors that no rule took care of.

The functional mode (:mod:`lrp_domains.core.functional`) reports each such operation here with
the module it ran in; :meth:`Coverage.check` then raises (strict) or warns, once per operation.
"""

from __future__ import annotations

import warnings


class LRPCoverageError(RuntimeError):
    """Raised in strict mode when a model runs modules or operations that no rule covers."""


class Coverage:
    """Operations without a rule seen while a scope's model ran, by (operation, module name, type)."""

    def __init__(self) -> None:
        self._uncovered: dict[tuple[str, str, str], None] = {}
        self._reported: dict[tuple[str, str, str], None] = {}

    def record(self, operation: str, module_name: str = "", module_type: str = "") -> tuple[str, str, str] | None:
        """Note an operation on input-dependent tensors that no rule covers; returns its key when it
        is new (for :meth:`discard`), else None."""
        key = (operation, module_name, module_type)
        if key in self._uncovered:
            return None
        self._uncovered[key] = None
        return key

    def discard(self, key: tuple[str, str, str]) -> None:
        """Forget an operation not reported yet (it turned out to be off the explained path)."""
        if key not in self._reported:
            self._uncovered.pop(key, None)

    @property
    def uncovered(self) -> list[str]:
        """Operations without a rule seen so far, as ``"softmax in 'attn' (Attention)"``."""
        return [f"{op} in '{name or '<model>'}' ({kind})" for op, name, kind in self._uncovered]

    def check(self, strict: bool) -> None:
        """Raise (strict) or warn about operations without a rule not reported before."""
        new = [key for key in self._uncovered if key not in self._reported]
        if not new:
            return
        self._reported.update(dict.fromkeys(new))
        message = (
            "no LRP rule covers: " + "; ".join(self.uncovered) + ". Their plain gradient was used. "
            "Give these modules a rule in the composite (by type or name), or pass "
            "Composite(functional={name: handler}) for functional calls."
        )
        if strict:
            raise LRPCoverageError(message)
        warnings.warn(message, stacklevel=4)
