"""Where the relevance went: a per-module conservation ledger, recorded in the same backward pass.

With ``explain(..., ledger=True)`` every module that computes with a rule, every functional
operation a rule or handler takes care of, every operation no rule covers, and every operation
that mixes a constant into an input-dependent tensor (a bias added in ``forward``, a masked fill)
is *tapped*: an identity autograd node on each of its input-dependent inputs and on its output.
In the backward pass the tap of a tensor ``t`` with modified gradient ``g`` reads ``sum(t * g)``
per example, the relevance crossing it (a tap on an anchor, where an input-layer rule writes
relevance directly, reads the gradient itself). A tap on an input sees only what this module
sends back (its own node), so for each tapped operation::

    absorbed = relevance entering at its output - relevance leaving at its inputs

(negative where a rule creates relevance). Operations that are not tapped move relevance without
changing it (reshapes, sums, concatenation of input-dependent tensors, max-type reductions, the
uniform and identity rules), so per example::

    relevance of the inputs (and sources) + sum(absorbed) + numerical = explained

where ``numerical`` is what no tapped operation accounts for: rounding, or a failure (an
overflow, an operation the ledger cannot see). Tensors whose first dimension is not the batch
(a broadcast constant, tokens routed across examples) cannot be split per example: such an
operation is left untapped and its share lands in ``numerical``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Ledger", "LedgerRows", "NUMERICAL"]

#: The module name of the row that holds what no module accounts for.
NUMERICAL = "(numerical)"


class _Tap(torch.autograd.Function):
    """Identity (a view of the input: rules that recognise a model input by identity still do);
    the backward hands the sink, per example, ``sum(x * grad)`` (or ``sum(grad)`` for an anchor)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sink: Callable[[torch.Tensor], None], written: bool) -> torch.Tensor:
        ctx.sink, ctx.written = sink, written
        if not written:
            ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        with unintercepted():
            ctx.sink(_per_example_sum(grad) if ctx.written else _per_example_dot(ctx.saved_tensors[0], grad))
        return grad, None, None


class _BiasTap(torch.autograd.Function):
    """Identity; the backward hands the sink, per example, ``sum(b * grad)``: what a layer under
    LRP-0 absorbs, with ``b`` its bias along the channel dimension ``dim`` of the output."""

    @staticmethod
    def forward(
        ctx: Any, z: torch.Tensor, sink: Callable[[torch.Tensor], None], bias: torch.Tensor, dim: int
    ) -> torch.Tensor:
        ctx.sink, ctx.bias, ctx.dim = sink, bias.detach(), dim
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        with unintercepted():
            wide = _wide(grad).movedim(ctx.dim, -1)
            # a matrix-vector product first: summing over positions first reduces a strided dimension
            ctx.sink(_per_example_sum(wide @ ctx.bias.to(wide.dtype)))
        return grad, None, None, None


def unintercepted() -> Any:
    """A context for the ledger's own arithmetic, out of sight of the explaining scope's TorchFunctionMode (the
    backward runs inside it): each intercepted operation costs a Python dispatch."""
    return torch._C.DisableTorchFunction()


def _out_of_sight(method: Callable) -> Callable:
    """A tapping method run under :func:`unintercepted` (it runs in the scope's forward)."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with unintercepted():
            return method(*args, **kwargs)

    return run


def _wide(value: torch.Tensor) -> torch.Tensor:
    """Half types in float32: a product or a sum must not overflow where the factors do not."""
    value = value.detach()
    return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value


def _per_example_sum(value: torch.Tensor) -> torch.Tensor:
    value = _wide(value)
    return value.sum(tuple(range(1, value.dim()))) if value.dim() > 1 else value


def _per_example_dot(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``sum(x * grad)`` per leading index, in the tensors' dtype (float32 for half types; torch's
    cascade summation keeps float32 sums to about 1e-7 relative). Strided tensors are multiplied
    as they are (no contiguous copies)."""
    return _per_example_sum(_wide(x) * _wide(grad))


@dataclass
class LedgerRows:
    """The ledger of a batch: per row ``(module, rule)`` the relevance absorbed per example."""

    modules: list[str]
    rules: list[str]
    absorbed: torch.Tensor  # (rows, N), float64
    numerical: torch.Tensor  # (N,), float64

    @classmethod
    def concatenate(cls, parts: list[LedgerRows]) -> LedgerRows:
        """The ledgers of consecutive batches as one (rows are matched by module and rule)."""
        keys: list[tuple[str, str]] = []
        for part in parts:
            for key in zip(part.modules, part.rules):
                if key not in keys:
                    keys.append(key)
        blocks = []
        for part in parts:
            block = torch.zeros(len(keys), part.absorbed.shape[1], dtype=torch.float64)
            for row, key in enumerate(zip(part.modules, part.rules)):
                block[keys.index(key)] = part.absorbed[row]
            blocks.append(block)
        return cls(
            [k[0] for k in keys], [k[1] for k in keys], torch.cat(blocks, 1), torch.cat([p.numerical for p in parts])
        )

    def mean_with(self, other: LedgerRows) -> LedgerRows:
        """The mean of two ledgers of the same examples (rows matched by module and rule), as for
        an explanation averaged over a sequence and its reverse complement."""
        both = LedgerRows.concatenate([self, other])
        n = self.numerical.shape[0]
        return LedgerRows(
            both.modules,
            both.rules,
            (both.absorbed[:, :n] + both.absorbed[:, n:]) / 2,
            (self.numerical + other.numerical) / 2,
        )

    def with_row(self, module: str, rule: str, absorbed: torch.Tensor) -> LedgerRows:
        """The same ledger with one more row: what a step after the backward pass moved (it
        changes ``delta`` by that much; ``numerical`` stays what it was)."""
        value = absorbed.detach().double().cpu()
        return LedgerRows(
            [*self.modules, module],
            [*self.rules, rule],
            torch.cat([self.absorbed, value[None]]),
            self.numerical,
        )

    def subset(self, index: Any) -> LedgerRows:
        """The rows of some examples (``index`` selects along the batch)."""
        return LedgerRows(self.modules, self.rules, self.absorbed[:, index], self.numerical[index])

    def example_json(self, example: int) -> str:
        """One example's ledger as JSON (a run's ``ledger`` column): ``[module, rule, absorbed]`` for
        the modules that absorbed something, and the numerical rest."""
        items = [
            [module, rule, float(self.absorbed[row, example])]
            for row, (module, rule) in enumerate(zip(self.modules, self.rules))
            if float(self.absorbed[row, example]) != 0.0
        ]
        return json.dumps({"rows": items, "numerical": float(self.numerical[example])})

    @classmethod
    def from_json(cls, values: Any) -> LedgerRows | None:
        """The ledger of a run's rows (their ``ledger`` column, :meth:`example_json`); None when a
        row has none."""
        values = list(values)
        if not values or any(v is None for v in values):
            return None
        parts = []
        for value in values:
            data = json.loads(str(value))
            absorbed = torch.tensor([float(item[2]) for item in data["rows"]], dtype=torch.float64).reshape(-1, 1)
            parts.append(
                cls(
                    [str(item[0]) for item in data["rows"]],
                    [str(item[1]) for item in data["rows"]],
                    absorbed,
                    torch.tensor([float(data["numerical"])], dtype=torch.float64),
                )
            )
        return cls.concatenate(parts)

    def to_frame(self) -> pd.DataFrame:
        """Long table: example, module, rule, absorbed; a row per example and module where the
        absorbed relevance is not zero, and one ``(numerical)`` row per example."""
        import pandas as pd

        rows = []
        n = self.numerical.shape[0]
        for example in range(n):
            for row, (module, rule) in enumerate(zip(self.modules, self.rules)):
                value = float(self.absorbed[row, example])
                if value != 0.0:
                    rows.append((example, module, rule, value))
            rows.append((example, NUMERICAL, "", float(self.numerical[example])))
        return pd.DataFrame(rows, columns=["example", "module", "rule", "absorbed"])


class Ledger:
    """The taps of one forward and backward pass (see the module docstring)."""

    def __init__(self, batch_size: int) -> None:
        self.n = batch_size
        #: Per row, what its taps read: per leading index (the batch, or tokens flattened batch-major).
        self._in: dict[tuple[str, str], list[torch.Tensor]] = {}
        self._out: dict[tuple[str, str], list[torch.Tensor]] = {}
        self._broken: set[tuple[str, str]] = set()

    def _splittable(self, tensor: Any) -> bool:
        return (
            isinstance(tensor, torch.Tensor)
            and tensor.requires_grad
            and tensor.is_floating_point()
            and tensor.dim() >= 1
            and tensor.shape[0] >= self.n
            and tensor.shape[0] % self.n == 0
        )

    def _sink(
        self, table: dict[tuple[str, str], list[torch.Tensor]], key: tuple[str, str]
    ) -> Callable[[torch.Tensor], None]:
        def add(value: torch.Tensor) -> None:
            table.setdefault(key, []).append(value)  # reduced per example once, in rows()

        return add

    @_out_of_sight
    def tap(self, key: tuple[str, str], tensor: Any, side: str) -> Any:
        """``tensor`` tapped as an input (``side="in"``) or the output (``"out"``) of the row
        ``key``; a tensor that cannot be split per example marks the row unusable."""
        if not isinstance(tensor, torch.Tensor) or not tensor.requires_grad:
            return tensor
        if not self._splittable(tensor):
            self._broken.add(key)
            return tensor
        table = self._in if side == "in" else self._out
        return _Tap.apply(tensor, self._sink(table, key), False)

    @_out_of_sight
    def tap_bias(self, key: tuple[str, str], output: Any, bias: torch.Tensor, dim: int) -> Any:
        """The output of an affine layer under LRP-0, tapped for the row ``key``: it absorbs
        ``sum(bias * grad)`` (:meth:`~lrp_domains.core.rules.Rule.ledger_bias`)."""
        if not isinstance(output, torch.Tensor) or not output.requires_grad:
            return output
        if not self._splittable(output) or output.dim() < 2:
            self._broken.add(key)
            return output
        return _BiasTap.apply(output, self._sink(self._out, key), bias, dim)

    @_out_of_sight
    def tap_written(self, key: tuple[str, str], anchor: torch.Tensor) -> torch.Tensor:
        """An anchor (where an input-layer rule writes relevance) tapped for the row ``key``: its
        gradient is relevance leaving the module."""
        if not self._splittable(anchor):
            self._broken.add(key)
            return anchor
        return _Tap.apply(anchor, self._sink(self._in, key), True)

    def tap_all(self, key: tuple[str, str], values: Any, side: str) -> Any:
        """Every input-dependent tensor in ``values`` (a tensor, or a tuple or list of them)."""
        if isinstance(values, (tuple, list)):
            return type(values)(self.tap_all(key, v, side) for v in values)
        return self.tap(key, values, side)

    def discard(self, key: tuple[str, str]) -> None:
        """Leave the row ``key`` out (an operation found to be off the explained path)."""
        self._broken.add(key)

    def _total(self, table: dict[tuple[str, str], list[torch.Tensor]], key: tuple[str, str]) -> torch.Tensor:
        values = table.get(key)
        if not values:
            return torch.zeros(self.n, dtype=torch.float64)
        return sum(v.reshape(self.n, -1).sum(1).double() for v in values).cpu()  # type: ignore[union-attr]

    def rows(self, delta: torch.Tensor) -> LedgerRows:
        """The rows of this pass, and the numerical remainder (``delta`` minus all absorbed)."""
        keys = [key for key in dict.fromkeys([*self._out, *self._in]) if key not in self._broken]
        absorbed = (
            torch.stack([self._total(self._out, k) - self._total(self._in, k) for k in keys])
            if keys
            else torch.zeros(0, self.n, dtype=torch.float64)
        )
        numerical = delta.detach().double().cpu() - absorbed.sum(0)
        return LedgerRows([k[0] for k in keys], [k[1] for k in keys], absorbed, numerical)
