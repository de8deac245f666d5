#!/usr/bin/env python
"""From LRP to de-novo motifs: a dataset run, the tfmodisco-lite export, ``modisco motifs``, and
each discovered pattern matched to the known motifs.

Steps: ``explain_dataset`` on a FASTA (resumable shards in ``OUT/run``), ``export_modisco``
(``ohe.npy``/``attr.npy``, hypothetical contributions), ``modisco motifs`` (tfmodisco-lite, run as a
separate program: ``pip install modisco-lite`` into any environment and pass ``--modisco`` its
path if it is not on PATH), then ``patterns.csv``: per discovered pattern, the number of seqlets
and the best-matching known motif by column correlation of the pattern's PPM (trimmed to the
positions carrying at least 25% of its peak contribution) with the motif's PPM, both strands,
every offset. Known motifs: the ten planted JASPAR motifs of ``lrp_domains.bench.data.synthetic`` by
default (so on synthetic data the table says which planted motifs were rediscovered), or a
JASPAR/MEME file with ``--motifs``.

    python workflows/bio/modisco_motifs.py --out runs/modisco --n 2000       # synthetic windows, ~30 s
    python workflows/bio/modisco_motifs.py peaks.fa --out runs/peaks --model pkg.models:build --weights w.safetensors \\
        --motifs JASPAR2024_CORE_vertebrates.meme
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from lrp_domains.run import explain_dataset, export_modisco


def known_motifs(source: str | None) -> dict[str, np.ndarray]:
    """``name -> PPM (width x 4, ACGT)``: the synthetic benchmark's planted motifs, or a
    JASPAR/MEME file read with Biopython."""
    if source is None:
        from lrp_domains.bench.data.synthetic import motif_ppms

        return {f"{motif_id} {name}": ppm.T for motif_id, (name, ppm) in motif_ppms().items()}
    from Bio import motifs as biomotifs

    with open(source) as handle:
        text = handle.read()
    kind = "minimal" if "MEME version" in text else "jaspar"
    with open(source) as handle:
        found = biomotifs.parse(handle, kind)
    ppms = {}
    for motif in found:
        counts = np.array([motif.counts[base] for base in "ACGT"], dtype=float).T
        ppms[f"{getattr(motif, 'matrix_id', '') or ''} {motif.name}".strip()] = counts / counts.sum(1, keepdims=True)
    return ppms


def trim(ppm: np.ndarray, contributions: np.ndarray, fraction: float = 0.25) -> np.ndarray:
    """The span of ``ppm`` (L x 4) whose summed |contribution| is at least ``fraction`` of its peak."""
    importance = np.abs(contributions).sum(1)
    keep = np.flatnonzero(importance >= fraction * importance.max())
    return ppm[keep.min() : keep.max() + 1]


def best_match(pattern: np.ndarray, motifs: dict[str, np.ndarray], min_overlap: float = 0.7) -> tuple[str, str, float]:
    """``(name, strand, r)`` of the known motif whose PPM correlates best (Pearson over the
    overlapping columns' 4 x w values) with ``pattern`` (L x 4), over both strands and every offset
    overlapping at least ``min_overlap`` of the shorter one."""
    best = ("", "", -1.0)
    for name, ppm in motifs.items():
        for strand, oriented in (("+", ppm), ("-", ppm[::-1, ::-1])):
            width = len(oriented)
            need = min_overlap * min(width, len(pattern))
            for offset in range(-width + 1, len(pattern)):
                lo, hi = max(0, offset), min(len(pattern), offset + width)
                if hi - lo < need:
                    continue
                with np.errstate(invalid="ignore", divide="ignore"):  # flat columns: no correlation
                    r = np.corrcoef(pattern[lo:hi].ravel(), oriented[lo - offset : hi - offset].ravel())[0, 1]
                if np.isfinite(r) and r > best[2]:
                    best = (name, strand, float(r))
    return best


def pattern_table(modisco_h5: Path, motifs: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per tfmodisco-lite pattern: sign, name, seqlets, trimmed width, best known match."""
    import h5py

    rows = []
    with h5py.File(modisco_h5, "r") as handle:
        for group in ("pos_patterns", "neg_patterns"):
            for name in handle.get(group, {}):
                pattern = handle[group][name]
                ppm = trim(pattern["sequence"][:], pattern["contrib_scores"][:])
                match, strand, r = best_match(ppm, motifs)
                rows.append(
                    {
                        "sign": group[:3],
                        "pattern": name,
                        "seqlets": int(pattern["seqlets"]["n_seqlets"][0]),
                        "width": len(ppm),
                        "best_match": match,
                        "strand": strand,
                        "correlation": r,
                    }
                )
    return pd.DataFrame(rows, columns=["sign", "pattern", "seqlets", "width", "best_match", "strand", "correlation"])


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Run the workflow; returns the written paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "fasta",
        nargs="?",
        type=Path,
        default=None,
        help="FASTA of equal-length windows (default: N synthetic windows with planted motifs)",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=2000, help="synthetic windows when no FASTA is given")
    parser.add_argument("--model", help="MODULE:FACTORY (default: the bundled synthetic-motif CNN)")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--motifs", help="JASPAR/MEME file of known motifs (default: the planted ten)")
    parser.add_argument("--modisco", default=shutil.which("modisco"), help="path of the modisco program")
    parser.add_argument("--max-seqlets", type=int, default=2000)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    fasta = args.fasta
    if fasta is None:
        from lrp_domains.bench.data.synthetic import make_dataset, write_fasta

        fasta = write_fasta(args.out / "windows.fa", make_dataset(args.n, seed=11))
    from lrp_domains.bio import SequenceExplainer

    if args.model:
        explainer = SequenceExplainer.from_options(args.model, args.weights)
    else:
        explainer = SequenceExplainer.default()
    explain_dataset(explainer, fasta, args.out / "run", shard_size=500)
    ohe, attr = export_modisco(args.out / "run", f"{args.out}/")
    written = {"ohe": ohe, "attr": attr}
    if args.modisco is None:
        raise SystemExit(
            f"modisco (tfmodisco-lite) is not on PATH: pip install modisco-lite, then run\n  modisco "
            f"motifs -s {ohe} -a {attr} -n {args.max_seqlets} -w {np.load(ohe, mmap_mode='r').shape[2]} "
            f"-o {args.out}/modisco.h5\nand this script again with --modisco PATH"
        )
    result = args.out / "modisco.h5"
    if not result.exists():
        width = np.load(ohe, mmap_mode="r").shape[2]
        subprocess.run(
            [
                args.modisco,
                "motifs",
                "-s",
                str(ohe),
                "-a",
                str(attr),
                "-n",
                str(args.max_seqlets),
                "-w",
                str(width),
                "-o",
                str(result),
            ],
            check=True,
        )
    written["modisco"] = result
    table = pattern_table(result, known_motifs(args.motifs))
    table.to_csv(args.out / "patterns.csv", index=False)
    written["patterns"] = args.out / "patterns.csv"
    print(table.to_string(index=False))
    for name, path in written.items():
        print(f"{name}: {path}")
    return written


if __name__ == "__main__":
    main()
