#!/usr/bin/env python
"""Motif report: which known motifs the model's relevant regions look like, and (on synthetic data)
whether they are the motifs that were planted.

Steps, each one library call: nucleotide relevance (``SequenceExplainer``, composite ``genomics``),
seqlets (``call_seqlets``: runs above the 99% quantile of a position-shuffled null), their best
JASPAR matches (``annotate_seqlets``), the standard sequence report (``write_sequence_report``),
and a motif table counting the seqlets whose best match is each JASPAR matrix. When the FASTA
headers record planted motifs (``lrp_domains.bench.data.synthetic`` format, as in
``datasets/example_sequences.fa``), it also scores recovery: a planted motif is *found* when a
positive seqlet overlaps at least half of its width, and *named* when that seqlet's best match is the
planted matrix (a related family member, e.g. RELB for NFKB1, counts as found, not named).

    python workflows/bio/motif_report.py --out runs/motifs                      # the 40 example sequences
    python workflows/bio/motif_report.py my.fa --out runs/mine --model mypkg.models:build --weights w.safetensors

Offline: JASPAR comes from pyjaspar's bundled database.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from lrp_domains.bench.data.synthetic import motif_ppms, read_synthetic_fasta
from lrp_domains.bio import SequenceExplainer, annotate_seqlets, call_seqlets
from lrp_domains.data import datasets_dir
from lrp_domains.report.blocks import Page, paragraph, table
from lrp_domains.report.sequences import write_sequence_report


def motif_table(seqlets: pd.DataFrame) -> pd.DataFrame:
    """Per best-matching JASPAR matrix: seqlet count, mean relevance and median match p-value,
    positive seqlets with a match only (``annotate_seqlets`` leaves ``motif_id`` empty above its
    ``max_p``), most frequent first."""
    hits = seqlets[(seqlets.sign == "positive") & (seqlets.motif_id.fillna("") != "")]
    grouped = hits.groupby(["motif_id", "motif_name"])
    summary = grouped.agg(
        seqlets=("relevance", "size"), mean_relevance=("relevance", "mean"), median_p=("match_p", "median")
    ).reset_index()
    return summary.sort_values(["seqlets", "mean_relevance"], ascending=[False, False], ignore_index=True)


def planted_recovery(fasta: Path, seqlets: pd.DataFrame) -> pd.DataFrame:
    """One row per planted motif: whether a positive seqlet overlaps half its width (found) and
    whether that seqlet's best match is the planted matrix (named)."""
    data = read_synthetic_fasta(fasta)
    widths = {motif_id: ppm.shape[1] for motif_id, (_, ppm) in motif_ppms().items()}
    positive = seqlets[seqlets.sign == "positive"]
    rows = []
    for seq_id, placements in zip(data.ids, data.placements):
        candidates = positive[positive.id == seq_id]
        for placement in placements:
            start, end = placement.start, placement.start + widths[placement.motif_id]
            overlap = (candidates.end.clip(upper=end) - candidates.start.clip(lower=start)).clip(lower=0)
            found = candidates[overlap * 2 >= end - start]
            named = "motif_id" in found and bool((found.motif_id == placement.motif_id).any())
            rows.append(
                {
                    "id": seq_id,
                    "motif_id": placement.motif_id,
                    "motif_name": placement.name,
                    "start": start,
                    "end": end,
                    "found": len(found) > 0,
                    "named": named,
                }
            )
    return pd.DataFrame(rows, columns=["id", "motif_id", "motif_name", "start", "end", "found", "named"])


def _has_planted_motifs(fasta: Path) -> bool:
    with open(fasta) as handle:
        return " motifs=" in handle.readline()


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Run the workflow; returns the written paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fasta", nargs="?", type=Path, default=datasets_dir() / "example_sequences.fa")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", help="MODULE:FACTORY (default: the bundled synthetic-motif CNN)")
    parser.add_argument("--weights", type=Path, help="safetensors weights for --model")
    parser.add_argument("--motifs", default="JASPAR2024", help="JASPAR release or a JASPAR/MEME file")
    args = parser.parse_args(argv)

    if args.model:
        explainer = SequenceExplainer.from_options(args.model, args.weights)
    else:
        explainer = SequenceExplainer.default()
    explanation = explainer.explain(args.fasta, progress=False)
    seqlets = call_seqlets(explanation)
    if len(seqlets):
        seqlets = annotate_seqlets(seqlets, motifs=args.motifs)
    written = write_sequence_report(explanation, args.out, seqlets, title=f"Sequence relevance: {args.fasta.name}")

    motifs = motif_table(seqlets) if "motif_id" in seqlets else pd.DataFrame()
    motifs.to_csv(args.out / "motifs.csv", index=False)
    written["motifs"] = args.out / "motifs.csv"
    page = Page(
        f"Motifs in the relevant regions of {args.fasta.name}",
        intro=f"{len(explanation.sequences)} sequences, {len(seqlets)} seqlets "
        f"({int((seqlets.sign == 'positive').sum()) if len(seqlets) else 0} positive).",
    )
    page.section("Best JASPAR match of positive seqlets").add(table(motifs))
    if _has_planted_motifs(args.fasta):
        recovery = planted_recovery(args.fasta, seqlets)
        recovery.to_csv(args.out / "planted.csv", index=False)
        written["planted"] = args.out / "planted.csv"
        found, named = recovery.found.mean(), recovery.named.mean()
        per_motif = recovery.groupby("motif_name")[["found", "named"]].mean().reset_index()
        page.section("Planted motifs").add(
            paragraph(
                f"{len(recovery)} planted motifs: {found:.0%} found by a positive seqlet, {named:.0%} "
                "named (best JASPAR match = the planted matrix)."
            ),
            table(per_motif),
        )
        print(f"planted motifs found {found:.2f}, named {named:.2f} ({len(recovery)} motifs)")
    written["motif_report"] = page.write(args.out / "motifs.html")
    for name, path in written.items():
        print(f"{name}: {path}")
    return written


if __name__ == "__main__":
    main()
