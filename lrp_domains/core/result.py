"""The result of an explanation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Explanation:
    """Relevance of every input feature for one explained output per example.

    Attributes
    ----------
    relevance:
        Same shape as the inputs.
    output:
        The model output (detached).
    target:
        The explained output index per example (LongTensor), or None when a callable chose it.
    explained:
        The explained value per example, ``(N,)``: the relevance seeded at the output.
    delta:
        ``explained - relevance.sum()`` per example: what biases and stabilizers absorbed (or
        what was created); near zero for conservative rules on bias-free networks.
    """

    relevance: torch.Tensor
    output: torch.Tensor
    target: torch.Tensor | None
    explained: torch.Tensor
    delta: torch.Tensor
    #: With ``explain(..., hypothetical=True)``: the relevance each input entry would receive at
    #: value 1 (for one-hot inputs, each base's hypothetical contribution; first order).
    hypothetical: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.relevance.shape[0]

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per example and input feature (``d1``, ``d2``... index the
        non-batch dimensions), with the relevance, the explained value and the delta."""
        import pandas as pd

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
