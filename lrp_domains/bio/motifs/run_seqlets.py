"""Seqlets of a whole finished run, read shard by shard, and their BED file.

:func:`run_seqlets` calls the seqlets of every ``ok`` row of a finished sequence run (``sequences``
or ``dna-lm``) as :func:`~lrp_domains.bio.motifs.seqlets.call_seqlets` calls them on the explanation of all
its records at once: the null is pooled over the whole run (the same shuffles, in the same order,
from the same seed), then each record is called against that one threshold. Memory holds one
shard and the null: up to ``max_null`` window sums (8 bytes each) are kept exactly; a larger run
keeps a uniform random sample of them (each kept with probability ``2**-k``), so its threshold is
the quantile of that sample. :func:`write_seqlets_bed` writes them as BED6, in genome coordinates
when every id is a region (``chrom:start-end(strand)``, as ``--regions`` runs name their windows),
else in record coordinates under a header line that says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrp_domains.errors import InputError

__all__ = ["RECORD_HEADER", "ids_are_regions", "run_seqlets", "write_seqlets_bed"]

#: The first line of a seqlets BED whose chrom column holds record ids.
RECORD_HEADER = "# coordinates are within each record (ids carry no genome coordinates)"
COLUMNS = ["id", "start", "end", "strand", "relevance", "sequence", "sign", "threshold"]


class _Null:
    """The pooled null's window sums: all of them up to ``limit``, then a uniform Bernoulli sample
    (the rate halves, and the kept values are thinned by half, each time the count passes it)."""

    def __init__(self, limit: int, seed: int) -> None:
        self.limit = max(int(limit), 1)
        self.rate = 1.0
        self.count = 0
        self.parts: list[np.ndarray] = []
        self.rng = np.random.default_rng([seed, 1])  # apart from the shuffles' generator

    def add(self, values: np.ndarray) -> None:
        if self.rate < 1.0:
            values = values[self.rng.random(len(values)) < self.rate]
        self.parts.append(values)
        self.count += len(values)
        while self.count > self.limit:
            self.rate /= 2
            self.parts = [part[self.rng.random(len(part)) < 0.5] for part in self.parts]
            self.count = sum(len(part) for part in self.parts)

    def values(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0)


def _ok_rows(path: Path, columns: list[str]) -> tuple[dict[str, list], list[np.ndarray]]:
    """One shard's ``ok`` rows: the given columns, and each row's relevance as float64."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    marked = "status" in names
    table = pq.read_table(path, columns=[*columns, "relevance", *(["status"] if marked else [])])
    if marked:
        keep = [i for i, status in enumerate(table.column("status").to_pylist()) if status == "ok"]
        table = table.take(pa.array(keep, type=pa.int64()))
    relevance = table.column("relevance").combine_chunks()
    offsets = relevance.offsets.to_numpy()
    flat = relevance.values.to_numpy(zero_copy_only=False).astype(np.float64)
    rows = [flat[offsets[i] : offsets[i + 1]] for i in range(len(relevance))]
    return {name: table.column(name).to_pylist() for name in columns}, rows


def _finished_sequence_run(run_dir: Path, step: str) -> tuple[dict, list[Path]]:
    import pyarrow.parquet as pq

    from lrp_domains.run.manifest import finished_run

    manifest, files = finished_run(run_dir, step)
    if not {"sequence", "relevance"} <= set(pq.read_schema(files[0]).names):
        raise InputError(
            f"{run_dir} holds a {manifest['settings'].get('kind')} run, whose rows have no sequences and "
            "per-position relevance; seqlets need a sequence run (run sequences or run dna-lm)"
        )
    return manifest, files


def run_seqlets(
    run_dir: str | Path,
    motifs: Any = None,
    window: int = 7,
    alpha: float = 0.01,
    null: str = "shuffle",
    flank: int = 3,
    sign: str = "positive",
    min_length: int = 5,
    seed: int = 0,
    max_null: int = 20_000_000,
    collection: str = "CORE",
    tax_group: str = "vertebrates",
) -> pd.DataFrame:
    """The seqlets of every ``ok`` row of the finished run in ``run_dir`` (module docstring), with
    the columns of :func:`~lrp_domains.bio.motifs.seqlets.call_seqlets` and, with ``motifs`` (a JASPAR
    release, a JASPAR/MEME file or motifs; None or ``"none"``: no matching), the best match of each
    (:func:`~lrp_domains.bio.motifs.seqlets.annotate_seqlets`). ``null``: ``"shuffle"`` or ``"quantile"``;
    the other parameters are call_seqlets'. Equal to call_seqlets on the run's explanation when
    the null has at most ``max_null`` values."""
    from lrp_domains.bio.motifs.seqlets import _runs, _window_sums, annotate_seqlets

    if sign not in ("positive", "negative", "both"):
        raise ValueError(f"sign must be 'positive', 'negative' or 'both', got {sign!r}")
    if null not in ("shuffle", "quantile"):
        raise ValueError("a run's seqlets take null='shuffle' or null='quantile'")
    run_dir = Path(run_dir)
    _, files = _finished_sequence_run(run_dir, "seqlets")
    pool = _Null(max_null, seed)
    shuffles = np.random.default_rng(seed)
    any_finite = False
    for path in files:  # first pass: the pooled null, in input order
        _, rows = _ok_rows(path, [])
        for row in rows:
            if not np.isfinite(row).all():
                continue
            any_finite = True
            pool.add(_window_sums((shuffles.permutation(row) if null == "shuffle" else row)[None], window)[0])
    reference = pool.values()
    if not any_finite or not len(reference):
        return pd.DataFrame([], columns=COLUMNS)
    directions = ["positive", "negative"] if sign == "both" else [sign]
    thresholds = {}
    for direction in directions:
        factor = 1.0 if direction == "positive" else -1.0
        thresholds[direction] = max(float(np.quantile(factor * reference, 1 - alpha)), 0.0)
    del reference, pool
    found: dict[str, list[dict]] = {direction: [] for direction in directions}
    for path in files:  # second pass: each record against the run's threshold
        columns, rows = _ok_rows(path, ["id", "sequence"])
        for name, sequence, scores in zip(columns["id"], columns["sequence"], rows):
            if not np.isfinite(scores).all():
                continue
            sums = _window_sums(scores[None], window)[0]
            length = len(scores)
            for direction in directions:
                factor, threshold = (1.0 if direction == "positive" else -1.0), thresholds[direction]
                for start, end in _runs(factor * sums > threshold):
                    start, end = max(0, start - flank), min(length, end + flank)
                    if end - start < min_length:
                        continue
                    found[direction].append(
                        {
                            "id": name,
                            "start": start,
                            "end": end,
                            "strand": "+",
                            "relevance": float(scores[start:end].sum()),
                            "sequence": sequence[start:end],
                            "sign": direction,
                            "threshold": factor * threshold,
                        }
                    )
    seqlets = pd.DataFrame([row for direction in directions for row in found[direction]], columns=COLUMNS)
    if motifs is not None and not (isinstance(motifs, str) and motifs.lower() == "none") and len(seqlets):
        seqlets = annotate_seqlets(seqlets, motifs, collection=collection, tax_group=tax_group)
    return seqlets


def ids_are_regions(ids: Any) -> bool:
    """True when every id is a genome region (:func:`~lrp_domains.bio.sequences.tracks.parse_region`)."""
    from lrp_domains.bio.sequences.tracks import parse_region

    try:
        for name in ids:
            parse_region(name)
    except InputError:
        return False
    return True


def write_seqlets_bed(
    seqlets: pd.DataFrame, path: str | Path, chrom_sizes: Any = None, coordinates: bool | None = None
) -> Path:
    """Seqlets (:func:`run_seqlets`, or :func:`~lrp_domains.bio.motifs.seqlets.call_seqlets`, optionally
    annotated) as BED6: chrom, start, end, name (the motif match, else ``seqlet``), score (summed
    relevance), strand (the match's, else the seqlet's own).

    In genome coordinates when every id is a region (``coordinates=None``; True or False forces
    it): :func:`~lrp_domains.bio.sequences.tracks.seqlets_to_genome_bed`, each inside its chromosome when
    ``chrom_sizes`` are given. Otherwise the chrom column is the record id, positions are within
    the record, and the first line is :data:`RECORD_HEADER`. Returns the path."""
    from lrp_domains.bio.sequences.tracks import seqlets_to_genome_bed
    from lrp_domains.files.writing import atomic_path

    ids = [str(name) for name in seqlets["id"]] if len(seqlets) else []
    genome = ids_are_regions(dict.fromkeys(ids)) if coordinates is None else coordinates
    if genome:
        return seqlets_to_genome_bed(seqlets, path, chrom_sizes=chrom_sizes)
    names = seqlets["motif_name"] if "motif_name" in seqlets else [None] * len(seqlets)
    matches = seqlets["match_strand"] if "match_strand" in seqlets else [None] * len(seqlets)
    strands = seqlets["strand"] if "strand" in seqlets else ["+"] * len(seqlets)
    lines = [RECORD_HEADER + "\n"]
    for name, start, end, score, motif, match, strand in zip(
        ids, seqlets["start"], seqlets["end"], seqlets["relevance"] if len(seqlets) else [], names, matches, strands
    ):
        motif = motif if isinstance(motif, str) and motif else None
        own = match if motif and match in ("+", "-") else (strand if strand in ("+", "-", ".") else ".")
        lines.append(f"{name}\t{int(start)}\t{int(end)}\t{motif or 'seqlet'}\t{round(float(score), 6):g}\t{own}\n")
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text("".join(lines), encoding="utf-8")
    return path
