"""Perturbation curves and their summaries, over any features and any ordering.

A feature is whatever the caller groups (tokens or words, sequence positions, genes): relevance
is given per example and feature, ``(N, F)``, and ``replace(inputs, removed)`` builds the
perturbed inputs from a boolean ``(N, F)`` mask. Curves are evaluated at fixed fractions of each
example's removable features (``valid`` and not ``protected``; special tokens are protected):

- ``deletion`` (Samek et al. 2017): remove the top fraction, most relevant first (``morf``) or
  least relevant first (``lerf``);
- ``insertion`` / activation (Ali et al. 2022): start from everything removed and add back the
  top fraction, most relevant first.

Summaries: :func:`area` (trapezoid over the fractions, AUC / AUAC), :func:`aopc` (Samek et al.
2017), :func:`abpc` (area between the LeRF and MoRF deletion curves, Schulz et al. 2020), and
:func:`au_mse` (area under the mean squared error of perturbed against original outputs, Ali et
al. 2022, on the pruning curve: least relevant removed first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

FRACTIONS = tuple(i / 10 for i in range(11))


def ranking(relevance: torch.Tensor, valid: torch.Tensor, descending: bool = True) -> torch.Tensor:
    """Per example, feature indices sorted by relevance (invalid features last); ties broken by
    position so that results are reproducible."""
    relevance = relevance.double().clone()
    fill = -math.inf if descending else math.inf
    relevance[~valid] = fill
    order = torch.argsort(relevance, dim=1, descending=descending, stable=True)
    return order


def removal_masks(
    relevance: torch.Tensor,
    fraction: float,
    *,
    order: str = "morf",
    mode: str = "deletion",
    valid: torch.Tensor | None = None,
    protected: torch.Tensor | None = None,
) -> torch.Tensor:
    """The boolean ``(N, F)`` mask of removed features at ``fraction`` (see the module docstring)."""
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    valid = torch.ones_like(relevance, dtype=torch.bool) if valid is None else valid.bool()
    protected = torch.zeros_like(valid) if protected is None else protected.bool()
    removable = valid & ~protected
    order_index = ranking(relevance, removable, descending=order == "morf")
    counts = removable.sum(1)
    k = torch.ceil(counts.double() * fraction - 1e-9).long()
    positions = torch.arange(relevance.shape[1]).expand_as(relevance)
    chosen = torch.zeros_like(removable)
    chosen.scatter_(1, order_index, positions < k[:, None])
    if mode == "deletion":
        return chosen & removable
    return removable & ~chosen


def curve(
    score: Callable[[Any], torch.Tensor],
    inputs: Any,
    relevance: torch.Tensor,
    replace: Callable[[Any, torch.Tensor], Any],
    *,
    order: str = "morf",
    mode: str = "deletion",
    fractions: Sequence[float] = FRACTIONS,
    valid: torch.Tensor | None = None,
    protected: torch.Tensor | None = None,
) -> torch.Tensor:
    """``score`` of the perturbed inputs at each fraction: ``(N, len(fractions))`` (or
    ``(N, len(fractions), ...)`` when ``score`` returns more than one value per example)."""
    values = []
    for fraction in fractions:
        removed = removal_masks(relevance, fraction, order=order, mode=mode, valid=valid, protected=protected)
        values.append(score(replace(inputs, removed)))
    return torch.stack(values, 1)


def area(values: torch.Tensor, fractions: Sequence[float] = FRACTIONS) -> torch.Tensor:
    """Trapezoid area under ``values`` (per example, last axis = fractions) over [0, 1]."""
    x = torch.as_tensor(list(fractions), dtype=torch.float64)
    return torch.trapezoid(values.double(), x, dim=-1) / (x[-1] - x[0])


def aopc(values: torch.Tensor) -> torch.Tensor:
    """Area over the perturbation curve: mean over steps of ``score(0) - score(step)``."""
    values = values.double()
    return (values[..., :1] - values).mean(-1)


def abpc(morf: torch.Tensor, lerf: torch.Tensor, fractions: Sequence[float] = FRACTIONS) -> torch.Tensor:
    """Area between the LeRF and MoRF deletion curves: large when removing the most relevant
    features hurts and removing the least relevant ones does not."""
    return area(lerf, fractions) - area(morf, fractions)


def au_mse(perturbed: torch.Tensor, original: torch.Tensor, fractions: Sequence[float] = FRACTIONS) -> torch.Tensor:
    """Area under the MSE between perturbed outputs ``(N, steps, C)`` and original ``(N, C)``."""
    mse = ((perturbed.double() - original.double()[:, None]) ** 2).mean(-1)
    return area(mse, fractions)


def group_relevance(relevance: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Relevance per group: ``groups`` ``(N, F)`` names each feature's group (``-1``: none, e.g.
    special tokens or padding); returns ``(N, G)`` sums, ``G`` = the largest group index + 1.
    Words from tokens (``TextExplanation.token_word``), positions from one-hot entries."""
    count = int(groups.max()) + 1 if groups.numel() else 0
    result = torch.zeros((relevance.shape[0], max(count, 0)), dtype=relevance.dtype)
    member = groups >= 0
    rows = torch.arange(relevance.shape[0])[:, None].expand_as(groups)
    result.index_put_((rows[member], groups[member]), relevance[member], accumulate=True)
    return result


def expand_groups(removed: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """A ``(N, G)`` group mask as the ``(N, F)`` mask of the groups' features (for ``replace``)."""
    padded = torch.cat([removed, torch.zeros_like(removed[:, :1])], 1)  # index -1 -> never removed
    index = torch.where(groups >= 0, groups, torch.full_like(groups, padded.shape[1] - 1))
    return padded.gather(1, index)
