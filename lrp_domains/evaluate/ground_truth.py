"""Relevance against a known answer: per-example AUROC and AUPR of a boolean truth mask."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _per_example(relevance: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if relevance.shape != truth.shape:
        raise ValueError(f"relevance {tuple(relevance.shape)} and truth {tuple(truth.shape)} must have the same shape")
    return relevance.reshape(len(relevance), -1).double(), truth.reshape(len(truth), -1).bool()


def roc_auc(scores: Any, labels: Any) -> float:
    """The area under the ROC curve of ``scores`` for binary ``labels`` (the Mann-Whitney U
    statistic: the probability that a positive outranks a negative, ties counting half); NaN when
    one class is absent. Arrays or tensors, any shape (flattened)."""
    values = torch.as_tensor(
        np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    ).reshape(-1)
    truth = (
        torch.as_tensor(np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels))
        .reshape(-1)
        .bool()
    )
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _average_ranks(values)
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def auroc(relevance: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per example, the probability that a true feature outranks a false one (ties count half):
    the area under the ROC curve (:func:`roc_auc`). NaN for examples whose mask is all true or all
    false."""
    scores, labels = _per_example(relevance, truth)
    return torch.tensor([roc_auc(s, y) for s, y in zip(scores, labels)], dtype=torch.float64)


def aupr(relevance: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per example, average precision: the mean precision at the rank of each true feature
    (features ordered by decreasing relevance; ties share their group's precision)."""
    scores, labels = _per_example(relevance, truth)
    result = torch.full((len(scores),), float("nan"), dtype=torch.float64)
    for i, (s, y) in enumerate(zip(scores, labels)):
        positives = int(y.sum())
        if positives == 0:
            continue
        order = torch.argsort(s, descending=True, stable=True)
        sorted_scores, sorted_labels = s[order], y[order].double()
        # Precision and recall at the end of each group of tied scores.
        last_of_group = torch.ones_like(sorted_labels, dtype=torch.bool)
        last_of_group[:-1] = sorted_scores[1:] != sorted_scores[:-1]
        hits = sorted_labels.cumsum(0)[last_of_group]
        seen = torch.arange(1, len(s) + 1, dtype=torch.float64)[last_of_group]
        recall_steps = torch.diff(hits, prepend=torch.zeros(1, dtype=torch.float64)) / positives
        result[i] = (recall_steps * hits / seen).sum()
    return result


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties given their average rank."""
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=values.dtype)
    unique, inverse = torch.unique(values, return_inverse=True)
    sums = torch.zeros(len(unique), dtype=values.dtype).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(unique), dtype=values.dtype).index_add_(0, inverse, torch.ones_like(ranks))
    return (sums / counts)[inverse]
