"""Motif-to-motif similarity with p-values: the TOMTOM statistics (Gupta, Stamatoyannopoulos,
Bailey & Noble, "Quantifying similarity between motifs", Genome Biology 8, R24, 2007), in numpy.

A query PPM ``Q`` ``(A, Lq)`` is compared with each target PPM ``T`` ``(A, w)`` (and its reverse
complement) at every offset where at least ``min(min_overlap, w, Lq)`` columns overlap:

- **Column score**: the Pearson correlation of the two probability columns (TOMTOM's default,
  ``-dist pearson``; 0 for a flat column), or minus their Euclidean distance (``"ed"``),
  discretised into ``bins`` steps over the range seen for this query. Pearson keeps flat flanks
  from matching the flat columns of long motifs.
- **Null per query column**: the column's scores against *every* column of the target library,
  on both strands (TOMTOM's background: the p-values depend on the library, as in TOMTOM and
  memelite).
- **Alignment p-value**: the sum of the aligned column scores is compared with the distribution of
  a sum of independent draws from the aligned query columns' nulls (their convolution, computed
  once for every span of query columns).
- **Per target**: the smallest alignment p-value over offsets and strands, corrected for the
  number of alignments tried (``1 - (1 - p)^n``, TOMTOM's offset correction); the E-value is that
  times the number of targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MotifComparison", "compare_motif", "reverse_complement_matrix"]


def reverse_complement_matrix(matrix: np.ndarray, alphabet: str = "ACGT") -> np.ndarray:
    """The reverse complement of an ``(A, w)`` matrix over ACGT (or ACGU)."""
    pairs = {"A": "TU", "C": "G", "G": "C", "T": "A", "U": "A"}
    complement = []
    for i, letter in enumerate(alphabet):
        partner = next((p for p in pairs.get(letter, "") if p in alphabet), None)
        complement.append(alphabet.index(partner) if partner is not None else i)
    return np.asarray(matrix)[complement, ::-1]


@dataclass
class MotifComparison:
    """One query against a library: per target, ``p_value`` (offset-corrected), ``e_value``,
    ``offset`` (query column where the target's first column sits; negative: overhang) and
    ``strand`` ("+" or "-", the target's)."""

    p_value: np.ndarray
    e_value: np.ndarray
    offset: np.ndarray
    strand: np.ndarray

    def best(self) -> int:
        """Index of the most similar target."""
        return int(np.argmin(self.p_value))


def _span_survival(pmfs: np.ndarray) -> list[list[np.ndarray]]:
    """``sf[a][n][s]``: P(sum of the nulls of query columns a..a+n >= s) (n: span length - 1)."""
    columns = pmfs.shape[0]
    result = []
    for start in range(columns):
        current = np.ones(1)
        spans = []
        for column in range(start, columns):
            current = np.convolve(current, pmfs[column])
            spans.append(np.cumsum(current[::-1])[::-1])
        result.append(spans)
    return result


def _column_scores(query: np.ndarray, targets: np.ndarray, score: str) -> np.ndarray:
    """``(Lq, columns)`` scores of every query column against every target column."""
    if score == "ed":
        return -np.sqrt(((query[:, :, None] - targets[:, None, :]) ** 2).sum(0))
    q = query - query.mean(0, keepdims=True)
    t = targets - targets.mean(0, keepdims=True)
    norms = np.sqrt((q**2).sum(0))[:, None] * np.sqrt((t**2).sum(0))[None, :]
    products = q.T @ t
    return np.divide(products, norms, out=np.zeros_like(products), where=norms > 1e-12)


def compare_motif(
    query: np.ndarray,
    targets: Sequence[np.ndarray],
    alphabet: str = "ACGT",
    bins: int = 100,
    min_overlap: int = 5,
    score: str = "pearson",
) -> MotifComparison:
    """Similarity p-values of ``query`` ``(A, Lq)`` (a PPM: columns sum to 1) against each of
    ``targets`` (PPMs ``(A, w)``), see the module docstring."""
    query = np.asarray(query, dtype=float)
    if query.ndim != 2 or query.shape[0] != len(alphabet) or query.shape[1] == 0:
        raise ValueError(f"query must be ({len(alphabet)}, width), got shape {query.shape}")
    forward = [np.asarray(t, dtype=float) for t in targets]
    if not forward:
        raise ValueError("no target motifs to compare with")
    reverse = [reverse_complement_matrix(t, alphabet) for t in forward]
    library = np.concatenate(forward + reverse, axis=1)  # (A, every target column, both strands): the null
    if score not in ("pearson", "ed"):
        raise ValueError(f"score must be 'pearson' or 'ed', got {score!r}")
    null_scores = _column_scores(query, library, score)  # (Lq, columns)
    low, high = float(null_scores.min()), float(null_scores.max())
    step = (high - low) / bins if high > low else 1.0

    def discrete(scores: np.ndarray) -> np.ndarray:
        return np.clip(np.rint((scores - low) / step), 0, bins).astype(np.int64)

    pmfs = np.stack([np.bincount(row, minlength=bins + 1) for row in discrete(null_scores)]).astype(float)
    pmfs /= pmfs.sum(1, keepdims=True)
    survival = _span_survival(pmfs)
    width_q = query.shape[1]
    p_values, offsets, strands = [], [], []
    for fwd, rev in zip(forward, reverse):
        best = (np.inf, 0, "+")
        tried = 0
        for strand, target in (("+", fwd), ("-", rev)):
            width = target.shape[1]
            scores = discrete(_column_scores(query, target, score))  # (Lq, w)
            need = min(min_overlap, width, width_q)
            for offset in range(-(width - need), width_q - need + 1):
                first, last = max(0, offset), min(width_q, offset + width)
                if last - first < need:
                    continue
                tried += 1
                columns = np.arange(first, last)
                total = int(scores[columns, columns - offset].sum())
                tail = survival[first][last - first - 1]
                p = float(tail[total]) if total < len(tail) else 0.0
                if p < best[0]:
                    best = (p, offset, strand)
        # 1 - (1 - p)^n without cancellation: tiny p stay positive (the query's own columns are in the null)
        p_values.append(float(-np.expm1(max(tried, 1) * np.log1p(-best[0]))) if best[0] < 1 else 1.0)
        offsets.append(best[1])
        strands.append(best[2])
    p_array = np.clip(np.array(p_values), 0.0, 1.0)
    return MotifComparison(p_array, p_array * len(forward), np.array(offsets), np.array(strands))
