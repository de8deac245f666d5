"""The result of an explanation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import torch

from lrp_domains.core.engine.ledger import LedgerRows

if TYPE_CHECKING:
    import pandas as pd

Relevance = Union[torch.Tensor, dict]


def _total(relevance: Relevance, sources: Mapping[str, torch.Tensor], n: int, dtype: torch.dtype) -> torch.Tensor:
    parts = list(relevance.values()) if isinstance(relevance, Mapping) else [relevance]
    parts += list(sources.values())
    if not parts:
        return torch.zeros(n, dtype=dtype)
    total = _sums(parts[0], n, dtype)
    for part in parts[1:]:
        total = total + _sums(part, n, dtype)
    return total


def _sums(part: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """Per example, the sum of ``part``, in ``dtype``."""
    sums = part.reshape(n, -1).sum(1)
    return sums if sums.dtype == dtype else sums.to(dtype)


@dataclass
class Explanation:
    """Relevance of every input feature for one explained output per example.

    Attributes
    ----------
    relevance:
        Same shape as the inputs (for keyword inputs: a dict with one tensor per floating-point
        input).
    output:
        The explained tensor of the model's output (detached).
    target:
        The explained output index per example (LongTensor), or None when a callable chose it.
    explained:
        The explained value per example, ``(N,)``: the relevance seeded at the output.
    delta:
        ``explained`` minus all relevance (inputs and sources) per example: what biases and
        stabilizers absorbed (or what was created); near zero for conservative rules on bias-free
        networks.
    hypothetical:
        With ``explain(..., hypothetical=True)``: the relevance each input entry would receive at
        value 1 (for one-hot inputs, each base's hypothetical contribution; first order).
    sources:
        With ``explain(..., sources=...)``: relevance of each named module's output (full shape).
    ledger_rows:
        With ``explain(..., ledger=True)``: where ``delta`` went (:attr:`ledger` as a table).
    """

    relevance: Relevance
    output: torch.Tensor
    target: torch.Tensor | None
    explained: torch.Tensor
    delta: torch.Tensor
    hypothetical: torch.Tensor | None = None
    sources: dict[str, torch.Tensor] = field(default_factory=dict)
    ledger_rows: LedgerRows | None = None

    @property
    def ledger(self) -> pd.DataFrame:
        """Where the relevance went (``explain(..., ledger=True)``): a long table with columns
        example, module, rule and absorbed (relevance entering the module at its output minus
        relevance leaving at its inputs; negative where a rule creates relevance), one row per
        example and module where it is not zero, and a ``(numerical)`` row per example for what no
        module accounts for. Per example, the input relevance (and sources) plus the sum of
        ``absorbed`` is the explained value (:mod:`lrp_domains.core.engine.ledger`)."""
        if self.ledger_rows is None:
            raise ValueError("this explanation has no ledger: explain with ledger=True")
        return self.ledger_rows.to_frame()

    @classmethod
    def build(
        cls,
        relevance: Relevance,
        output: torch.Tensor,
        target: torch.Tensor | None,
        explained: torch.Tensor,
        hypothetical: torch.Tensor | None = None,
        sources: Mapping[str, torch.Tensor] | None = None,
    ) -> Explanation:
        """An explanation with ``delta`` computed from the rest."""
        sources = dict(sources or {})
        delta = explained - _total(relevance, sources, explained.shape[0], explained.dtype)
        return cls(relevance, output, target, explained, delta, hypothetical, sources)

    @classmethod
    def concatenate(cls, parts: Sequence[Explanation]) -> Explanation:
        """The explanations of consecutive batches as one (same shapes but the batch dimension)."""
        if len(parts) == 1:
            return parts[0]

        def cat(values: list) -> Any:  # a tensor, a dict of tensors or None, as the field holds
            if values[0] is None:
                return None
            if isinstance(values[0], Mapping):
                return {key: torch.cat([v[key] for v in values]) for key in values[0]}
            return torch.cat(values)

        fields = ("relevance", "output", "target", "explained", "delta", "hypothetical", "sources")
        ledgers = [p.ledger_rows for p in parts]
        ledger = (
            LedgerRows.concatenate([r for r in ledgers if r is not None])
            if all(r is not None for r in ledgers)
            else None
        )
        return cls(**{name: cat([getattr(p, name) for p in parts]) for name in fields}, ledger_rows=ledger)

    def to(self, device: torch.device | str) -> Explanation:
        """The same explanation with relevance, hypothetical contributions and sources on ``device``."""

        def move(value: Any) -> Any:  # a tensor, a dict of tensors or None: the same kind
            if isinstance(value, Mapping):
                return {key: v.to(device) for key, v in value.items()}
            return value.to(device) if isinstance(value, torch.Tensor) else value

        return Explanation(
            move(self.relevance),
            self.output,
            self.target,
            self.explained.to(device),
            self.delta.to(device),
            move(self.hypothetical),
            move(self.sources),
            self.ledger_rows,
        )

    def __len__(self) -> int:
        return self.explained.shape[0]

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per example and input feature (``d1``, ``d2``... index the
        non-batch dimensions), with the relevance, the explained value and the delta."""
        import pandas as pd

        if not isinstance(self.relevance, torch.Tensor):
            raise TypeError("to_frame needs tensor inputs; for keyword inputs read .relevance[name]")
        relevance = self.relevance.detach().cpu()
        grids = torch.meshgrid(*[torch.arange(s) for s in relevance.shape], indexing="ij")
        frame = pd.DataFrame({"example": grids[0].reshape(-1).numpy()})
        for axis, grid in enumerate(grids[1:], start=1):
            frame[f"d{axis}"] = grid.reshape(-1).numpy()
        frame["relevance"] = relevance.reshape(-1).double().numpy()
        per_example = {"explained": self.explained, "delta": self.delta}
        if self.target is not None:
            per_example["target"] = self.target
        for key, value in per_example.items():
            frame[key] = value.detach().cpu().numpy()[frame["example"].to_numpy()]
        return frame
