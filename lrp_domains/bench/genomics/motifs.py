"""``lrp-domains bench motifs``: seqlets per second annotated against all of JASPAR2024 vertebrates.

Seqlets come from real explanations: the default CNN on synthetic sequences
(``lrp_domains.bench.data.synthetic``, JASPAR motifs planted in random DNA), seqlets of both signs
(:func:`~lrp_domains.bio.call_seqlets`), repeated in order when there are fewer than asked for.
Each is annotated against the 879 JASPAR2024 CORE vertebrate motifs (both strands, the 5 best
candidates get exact p-values), two ways, in one run:

- **NumPy** (today's :func:`~lrp_domains.bio.annotate_seqlets`): all seqlets and motifs scanned at
  once, score distributions built with NumPy and cached per motif;
- **Biopython** (the implementation it replaced): ``pssm.calculate`` per motif, seqlet and strand,
  ``ScoreDistribution`` in pure Python per candidate motif (cached too), on a small sample;
  its per-seqlet time is extrapolated.

Both give the same table (``tests/test_motif_speed.py``; checked again here on the sample). Warm:
every distribution the seqlets need is already cached; the median of ``repeats`` runs, the two
methods timed in turns. Warm-up: the one-time cost of being warm for any seqlet, i.e. the PSSMs,
the scan tables and all 879 distributions (Biopython: the mean time of the distributions its
sample built, times 879); the JASPAR release is loaded before either is timed. Set
``OMP_WAIT_POLICY=PASSIVE`` when timing (the CLI does).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np
import pandas as pd


def bench_seqlets(n_seqlets: int, seed: int = 0) -> pd.DataFrame:
    """``n_seqlets`` seqlets of the default CNN's explanations of synthetic sequences."""
    from lrp_domains.bench.data.synthetic import make_dataset
    from lrp_domains.bio import SequenceExplainer, call_seqlets

    data = make_dataset(max(50, min(n_seqlets, 2000)), seed=seed)
    explanation = SequenceExplainer.default().explain(list(data.sequences), ids=list(data.ids))
    found = call_seqlets(explanation, sign="both")
    if found.empty:
        raise RuntimeError("the default CNN gave no seqlets on the synthetic sequences")
    index = np.resize(np.arange(len(found)), n_seqlets)
    return found.iloc[index].reset_index(drop=True)


def biopython_annotate(
    seqlets: pd.DataFrame, library: list, cache: dict, candidates: int = 5, max_p: float = 1e-3
) -> tuple[pd.DataFrame, list[float]]:
    """The former ``annotate_seqlets`` (Biopython scanner and ``ScoreDistribution``), with its
    distributions kept in ``cache``; returns the table and the seconds of each distribution built."""
    from Bio.Seq import Seq

    from lrp_domains.bio.motifs.seqlets import _best_site, _pssm, _scannable

    built = []

    def distribution(matrix_id: str, key: tuple) -> Any:
        if (matrix_id, key) not in cache:
            start = time.perf_counter()
            background = {letter: 1.0 / len(key) for letter, _ in key}
            cache[matrix_id, key] = _pssm(matrix_id, key).distribution(background=background, precision=10**3)
            built.append(time.perf_counter() - start)
        return cache[matrix_id, key]

    def p_value(found: Any, score: float) -> float:
        index = int((score - found.min_score) / found.step)
        return float(np.clip(np.sum(found.bg_density[max(index, 0) :]), 0.0, 1.0))

    prepared = []
    for motif in library:
        letters = "".join(str(motif.alphabet))
        key = tuple((letter, tuple(float(v) for v in motif.counts[letter])) for letter in letters)
        prepared.append((getattr(motif, "matrix_id", None) or motif.name, motif.name, len(motif), key, letters))
    rows = []
    for sequence in seqlets["sequence"]:
        cleaned: dict[str, Any] = {}
        scored = []
        for matrix_id, name, width, key, letters in prepared:
            if width > len(str(sequence)):
                continue
            if letters not in cleaned:
                cleaned[letters] = Seq(_scannable(sequence, letters))
            pssm = _pssm(matrix_id, key)
            score, strand, position = _best_site(pssm, cleaned[letters])
            if np.isfinite(score):
                scored.append(
                    ((score - pssm.min) / (pssm.max - pssm.min), score, strand, position, matrix_id, name, key)
                )
        best = None
        for _, score, strand, position, matrix_id, name, key in sorted(scored, reverse=True)[:candidates]:
            p = p_value(distribution(matrix_id, key), score)
            if best is None or p < best[0]:
                best = (p, score, strand, position, matrix_id, name)
        if best is None:
            rows.append(
                {
                    "motif_id": "",
                    "motif_name": "",
                    "match_score": np.nan,
                    "match_p": np.nan,
                    "match_strand": "",
                    "match_start": np.nan,
                }
            )
            continue
        p, score, strand, position, matrix_id, name = best
        rows.append(
            {
                "motif_id": matrix_id if p <= max_p else "",
                "motif_name": name if p <= max_p else "",
                "match_score": score,
                "match_p": p,
                "match_strand": strand,
                "match_start": position,
            }
        )
    result = pd.concat([seqlets.copy(), pd.DataFrame(rows, index=seqlets.index)], axis=1)
    result["motifs_scanned"] = len(prepared)
    return result, built


def _clear_caches() -> None:
    from lrp_domains.bio.motifs import seqlets as M

    for cached in (M._pssm, M._distribution, M._library_tables):
        cached.cache_clear()


def run(n_seqlets: int = 2000, repeats: int = 3, old_seqlets: int = 20, release: str = "JASPAR2024") -> list[dict]:
    """Rows per method: seqlets timed, warm seconds per seqlet, seqlets per second, warm-up
    seconds, whether the two tables agree (on the Biopython sample)."""
    from lrp_domains.bio import annotate_seqlets
    from lrp_domains.bio.motifs import seqlets as M

    library = M.load_motifs(release)  # pyjaspar's database read once, outside every timing
    seqlets = bench_seqlets(n_seqlets)
    keys = [
        (
            getattr(m, "matrix_id", None) or m.name,
            tuple((letter, tuple(float(v) for v in m.counts[letter])) for letter in "".join(str(m.alphabet))),
        )
        for m in library
    ]

    # NumPy: the one-time warm-up (tables, every distribution); Biopython: a sample annotated once,
    # building the distributions its candidates need (their mean time, times the library's size,
    # is its warm-up). Then warm runs of both, in turns, so that load on the machine hits both.
    _clear_caches()
    start = time.perf_counter()
    annotate_seqlets(seqlets.iloc[:1], motifs=release)
    for matrix_id, key in keys:
        M._distribution(matrix_id, key)
    warm_up = time.perf_counter() - start
    sample = seqlets.iloc[:old_seqlets]
    cache: dict = {}
    old, built = biopython_annotate(sample, library, cache)
    old_warm_up = float(np.mean(built)) * len(keys) if built else float("nan")
    new_times, old_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        new = annotate_seqlets(seqlets, motifs=release)
        new_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        biopython_annotate(sample, library, cache)
        old_times.append(time.perf_counter() - start)
    new_seconds = statistics.median(new_times) / len(seqlets)
    old_seconds = statistics.median(old_times) / len(sample)
    agree = new.iloc[:old_seqlets].equals(old)

    base = {"motifs": len(library), "release": release}
    return [
        {
            **base,
            "method": "Biopython (before)",
            "seqlets": len(sample),
            "seconds_per_seqlet": old_seconds,
            "per_second": 1 / old_seconds,
            "warm_up": old_warm_up,
            "distributions_timed": len(built),
            "speedup": 1.0,
            "agree": agree,
        },
        {
            **base,
            "method": "NumPy (now)",
            "seqlets": len(seqlets),
            "seconds_per_seqlet": new_seconds,
            "per_second": 1 / new_seconds,
            "warm_up": warm_up,
            "distributions_timed": len(keys),
            "speedup": old_seconds / new_seconds,
            "agree": agree,
        },
    ]


def print_table(rows: list[dict]) -> None:
    """Print the rows (rich)."""
    from rich.console import Console
    from rich.table import Table

    first, old = rows[0], next((row for row in rows if row["method"].startswith("Biopython")), None)
    caption = (
        f"{first['motifs']} {first['release']} CORE vertebrate motifs, both strands, 5 candidates with exact "
        f"p-values; {os.cpu_count()} cores; tables equal: {'yes' if first['agree'] else 'NO'}"
    )
    if old is not None:
        caption += (
            f"; Biopython's warm-up extrapolated from the {old['distributions_timed']} distributions its sample built"
        )
    table = Table(title="bench motifs: seqlets annotated per second, warm", caption=caption)
    for column in ("method", "seqlets", "ms / 1k seqlets", "seqlets/s", "warm-up (s)", "speed-up"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        table.add_row(
            row["method"],
            str(row["seqlets"]),
            f"{1e6 * row['seconds_per_seqlet']:,.0f}",
            f"{row['per_second']:,.1f}",
            f"{row['warm_up']:,.1f}",
            f"{row['speedup']:,.0f}x",
        )
    Console().print(table)


if __name__ == "__main__":  # python -m lrp_domains.bench.genomics.motifs
    print_table(run())
