"""Vectorised PSSM scanning and exact score distributions, equal bit for bit to Biopython's.

:func:`lrp_domains.bio.motifs.seqlets.annotate_seqlets` used to call Biopython once per motif, seqlet and
strand (``pssm.calculate``) and to build each candidate's exact score distribution
(``Bio.motifs.thresholds.ScoreDistribution``) in pure Python: about 27 million Python-level
additions for 50 motifs. Here both are NumPy, over all seqlets and motifs at once, and reproduce
Biopython's floating-point operations in Biopython's order, so scores, positions, strands and
p-values are the same numbers, not approximations of them:

* **scores** (:class:`ScanTables`, :func:`scan`): Biopython's C scanner adds the window's
  log-odds in a double, column by column from 0.0, and stores the sum as a float32; a window
  with a letter other than A/C/G/T is NaN. Here the first ``PREFIX`` columns come from one
  lookup table of those running sums (one entry per k-mer; a letter N gives NaN), and the later
  columns are added one gather at a time, in the same order; then the same float32 cast.
* **distributions** (:func:`score_distribution`): ``ScoreDistribution(pssm=..., precision=1000)``
  discretises the score range ``[min(0, pssm.min), max(0, pssm.max)]`` into ``1000 * width``
  points with step ``interval / (n - 1)``, rounds each column score to ``int((s + step/2) //
  step)`` bins, and convolves: for each column and letter (in the PSSM's alphabet order), every
  bin ``i`` adds ``density[i] * background`` into bin ``clip(i + d, 0, n - 1)``. The interior
  is one shifted vector add per letter (each target bin receives exactly one term per letter,
  in the same order), the two clipped ends are accumulated sequentially, as Biopython's loop
  does. The motif density (``mo_density``), which nothing here reads, is not computed.

``tests/test_motif_speed.py`` holds both to Biopython: every distribution array equal, and
``annotate_seqlets`` equal to the former per-motif implementation on real explanations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

#: Biopython's ``pssm.calculate`` column order.
SCAN_LETTERS = "ACGT"
#: Code of a letter the scanner cannot score (N, padding).
N_CODE = 4
#: Columns summed through one k-mer lookup table (5**PREFIX rows per motif and strand).
PREFIX = 4

_CODES = np.full(256, N_CODE, dtype=np.int64)
for _code, _letter in enumerate(SCAN_LETTERS):
    _CODES[ord(_letter)] = _code


class ScoreDistribution(NamedTuple):
    """The fields of ``Bio.motifs.thresholds.ScoreDistribution`` that p-values read."""

    min_score: float
    step: float
    interval: float
    n_points: int
    bg_density: np.ndarray
    #: The PSSM's width: each column's score is rounded to a bin, so a sequence's mass may sit up
    #: to (columns + 1) / 2 bins away from its exact score's bin (see :func:`p_value`).
    columns: int = 0


def score_distribution(
    pssm: Any, background: dict[str, float] | None = None, precision: int = 10**3
) -> ScoreDistribution:
    """``pssm.distribution(background, precision)`` (Biopython), its background density as an
    array equal to Biopython's list element for element (module docstring)."""
    if background is None:
        background = dict.fromkeys(pssm.alphabet, 1.0)
    else:
        background = dict(background)
    total = sum(background.values())
    for letter in pssm.alphabet:
        background[letter] /= total
    min_score = min(0.0, pssm.min)
    interval = max(0.0, pssm.max) - min_score
    n_points = precision * pssm.length
    step = interval / (n_points - 1)

    def index_diff(x: float) -> int:
        return int((x - 0.0 + 0.5 * step) // step)

    density = np.zeros(n_points)
    density[-index_diff(min_score)] = 1.0
    last = n_points - 1
    for position in range(pssm.length):
        new = np.zeros(n_points)
        for letter, score in pssm[:, position].items():
            terms = density * background[letter]
            d = index_diff(score)
            # Bins i with i + d <= 0 all land in bin 0, those with i + d >= n - 1 in bin n - 1,
            # added one after the other in increasing i; every other bin gets one term.
            low = min(max(-d, -1), last)  # last i that lands in bin 0 (-1: none)
            high = max(min(last - d, n_points), low + 1)  # first i that lands in bin n - 1
            if low >= 0:
                new[0] = _sequential_sum(new[0], terms[: low + 1])
            if high < n_points:
                new[last] = _sequential_sum(new[last], terms[high:])
            if high > low + 1:
                new[low + 1 + d : high + d] += terms[low + 1 : high]
        density = new
    return ScoreDistribution(min_score, step, interval, n_points, density, pssm.length)


def _sequential_sum(start: float, terms: np.ndarray) -> float:
    """``start + terms[0] + terms[1] + ...``, left to right (zeros change nothing and are skipped)."""
    terms = terms[terms != 0]
    if not len(terms):
        return start
    return float(np.add.accumulate(np.concatenate(([start], terms)))[-1])


def p_value(distribution: Any, score: float) -> float:
    """P(score >= ``score``) under the background: the density summed from the score's bin, less
    the rounding slack of the distribution's columns.

    Each column's score is rounded to the nearest bin while the distribution is built (up to half
    a bin each, and the start once more), so the best sequence's mass can sit below the bin of its
    exact score: read from that bin, a consensus site's p-value came out 0 (Biopython reads it so).
    Starting ``(columns + 2) // 2`` bins lower counts it; that makes p-values conservative by at
    most that many bins (``interval / 2000`` in score, at the default precision)."""
    slack = (getattr(distribution, "columns", 0) + 2) // 2
    index = int((score - distribution.min_score) / distribution.step) - slack
    total = float(np.asarray(distribution.bg_density, dtype=float)[max(index, 0) :].sum())
    return min(max(total, 0.0), 1.0)


def scan_matrix(pssm: Any) -> np.ndarray:
    """The ``(width, 4)`` float64 log-odds matrix Biopython's C scanner reads (columns A, C, G, T).
    Its reverse complement's is ``scan_matrix(pssm)[::-1, ::-1]`` (Biopython's
    ``reverse_complement`` only reorders the values)."""
    return np.array([dict.__getitem__(pssm, letter) for letter in SCAN_LETTERS], dtype=float).T.copy()


def pssm_bounds(pssm: Any) -> tuple[float, float]:
    """``(pssm.min, pssm.max)``, summed as Biopython sums them (column by column from 0.0)."""
    low = high = 0.0
    for values in zip(*(dict.__getitem__(pssm, letter) for letter in pssm.alphabet)):
        low += min(values)
        high += max(values)
    return low, high


def encode(sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Scannable sequences (A/C/G/T/N only) as codes ``(S, max length)`` (0-3 for A/C/G/T, 4
    for anything else, also the padding) and their lengths."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    codes = np.full((len(sequences), int(lengths.max(initial=0))), N_CODE, dtype=np.int64)
    for row, text in enumerate(sequences):
        if text:
            codes[row, : len(text)] = _CODES[np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8)]
    return codes, lengths


class _Group(NamedTuple):
    width: int
    motifs: np.ndarray  # indices into the library, (M,)
    prefix: np.ndarray  # (5**k, 2M) running sums of the first k columns, forward then reverse
    columns: np.ndarray  # (width - k, 5, 2M) the remaining columns; N is NaN


class ScanTables:
    """Per-width lookup tables of a motif library, both strands (built once, reused)."""

    def __init__(self, matrices: Sequence[tuple[np.ndarray, np.ndarray]]):
        """``matrices``: per motif, its forward and reverse-complement scan matrices ``(W, 4)``."""
        self.n_motifs = len(matrices)
        widths = np.array([len(forward) for forward, _ in matrices], dtype=np.int64)
        self.groups = []
        for width in sorted(set(widths.tolist())):
            index = np.flatnonzero(widths == width)
            stacked = np.stack([matrices[i][0] for i in index] + [matrices[i][1] for i in index], axis=-1)  # W,4,2M
            padded = np.concatenate([stacked, np.full((width, 1, stacked.shape[-1]), np.nan)], axis=1)  # W,5,2M
            k = min(PREFIX, width)
            prefix = np.zeros((1, stacked.shape[-1]))
            for j in range(k):  # running sums in column order: entry (c0, c1, ...) = ((0 + T0[c0]) + T1[c1]) + ...
                prefix = (prefix[:, None, :] + padded[j][None, :, :]).reshape(-1, stacked.shape[-1])
            self.groups.append(_Group(width, index, np.ascontiguousarray(prefix), np.ascontiguousarray(padded[k:])))

    def scan(
        self, codes: np.ndarray, lengths: np.ndarray, chunk: int = 32, budget: int = 1 << 20
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best window of every motif in every sequence, as Biopython's ``_best_site``: the
        highest float32 score over positions and both strands (NaN windows count as -inf; ``+``
        wins ties; the first position wins), ``(score (S, M) float64, minus (S, M) bool,
        position (S, M) int64)``. Motifs longer than a sequence score -inf there.

        Sequences go ``chunk`` at a time, shortest first; work arrays hold at most ``budget``
        window scores (long sequences are scanned in stretches of windows)."""
        n_seq = len(codes)
        score = np.full((n_seq, self.n_motifs), -np.inf)
        minus = np.zeros((n_seq, self.n_motifs), dtype=bool)
        position = np.zeros((n_seq, self.n_motifs), dtype=np.int64)
        if not n_seq or not self.groups:
            return score, minus, position
        widest = max(2 * len(group.motifs) for group in self.groups)
        work = (np.empty(budget), np.empty(budget), np.empty(budget, dtype=np.float32))
        order = np.argsort(lengths, kind="stable")
        begin = 0
        while begin < n_seq:
            longest = int(lengths[order[min(begin + chunk, n_seq) - 1]])  # sorted: the longest of a full chunk
            rows = order[begin : begin + max(1, min(chunk, budget // max(1, longest * widest)))]
            begin += len(rows)
            length = int(lengths[rows].max())
            block = codes[rows, :length]
            for group in self.groups:
                if group.width > length:
                    continue
                best, where = self._best_windows(group, block, budget, work)
                half = best.shape[1] // 2
                forward, reverse = best[:, :half], best[:, half:]
                is_minus = ~(forward >= reverse)
                cells = np.ix_(rows, group.motifs)
                score[cells] = np.where(is_minus, reverse, forward)
                minus[cells] = is_minus
                position[cells] = np.where(is_minus, where[:, half:], where[:, :half])
        return score, minus, position

    @staticmethod
    def _best_windows(
        group: _Group, block: np.ndarray, budget: int, work: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per sequence and motif strand ``(S, 2M)``: the highest float32 window score (NaN as
        -inf) and its first window, over stretches of at most ``budget`` scores."""
        n_seq, n_windows, width = len(block), block.shape[1] - group.width + 1, group.motifs.size * 2
        k = group.width - len(group.columns)
        stretch = max(1, budget // (n_seq * width))
        best = where = None
        for start in range(0, n_windows, stretch):
            count = min(stretch, n_windows - start)
            shape = (n_seq, count, width)
            total, term = (buffer[: n_seq * count * width].reshape(shape) for buffer in work[:2])
            scores = work[2][: n_seq * count * width].reshape(shape)
            kmer = np.zeros((n_seq, count), dtype=np.int64)
            for j in range(k):  # index of (c0, ..., c_{k-1}) in the prefix table, c0 most significant
                kmer *= 5
                kmer += block[:, start + j : start + j + count]
            np.take(group.prefix, kmer, axis=0, out=total)
            for j, column in enumerate(group.columns, start=start + k):  # one column at a time, in order
                np.take(column, block[:, j : j + count], axis=0, out=term)
                total += term
            np.copyto(scores, total, casting="same_kind")  # Biopython's float32 scores array
            np.copyto(scores, -np.inf, where=np.isnan(scores))  # a window with an N: -inf
            top = scores.max(axis=1)
            first = np.zeros(top.shape, dtype=np.int64)
            for window in range(count - 1, -1, -1):  # the first window that reaches the maximum
                np.copyto(first, window, where=scores[:, window] == top)
            first += start
            if best is None:
                best, where = top, first
            else:  # a later stretch wins only when strictly higher
                better = top > best
                best, where = np.where(better, top, best), np.where(better, first, where)
        return best.astype(np.float64), where
