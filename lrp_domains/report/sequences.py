"""The sequence report: relevance arrays, tables, seqlets with motif matches, logos, one page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lrp_domains.bio.motifs import to_bed, to_modisco
from lrp_domains.bio.sequence_explainer import SequenceExplanation
from lrp_domains.report.blocks import Page, logo, paragraph, table


def write_sequence_report(explanation: SequenceExplanation, out_dir: str | Path, seqlets: pd.DataFrame,
                          logos: int = 6, title: str = "Sequence relevance",
                          notes: tuple[str, ...] = ()) -> dict[str, Path]:
    """Write ``ohe.npz``/``attr.npz`` (tfmodisco-lite layout), ``relevance.parquet`` (id,
    position, base, relevance), ``seqlets.csv`` and ``seqlets.bed``, ``logos/*.png`` for the
    sequences with the largest explained values, and ``report.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    written["ohe"], written["attr"] = to_modisco(explanation, f"{out}/")
    explanation.to_frame().to_parquet(out / "relevance.parquet", index=False)
    written["relevance"] = out / "relevance.parquet"
    seqlets.to_csv(out / "seqlets.csv", index=False)
    written["seqlets"] = out / "seqlets.csv"
    written["bed"] = to_bed(seqlets, out / "seqlets.bed")

    page = Page(title, intro=f"{len(explanation)} sequences, composite {explanation.composite}.")
    summary = pd.DataFrame({
        "id": explanation.ids, "length": explanation.lengths, "explained": explanation.explained.numpy(),
        "relevance": explanation.relevance.sum((1, 2)).double().numpy(), "delta": explanation.delta.numpy(),
        "seqlets": [int((seqlets["id"] == i).sum()) if len(seqlets) else 0 for i in explanation.ids],
    }).sort_values("explained", ascending=False)
    section = page.section("Sequences")
    section.add(paragraph("Relevance is seeded with the explained output (the logit) of each sequence; delta is "
                          "what biases and stabilizers absorbed."), *(paragraph(n, note=True) for n in notes),
                table(summary, max_rows=30))
    logo_section = page.section("Logos")
    for index in [explanation.ids.index(i) for i in summary.id[:logos]]:
        mine = seqlets[seqlets["id"] == explanation.ids[index]] if len(seqlets) else seqlets
        if len(mine):
            best = mine.sort_values("relevance", ascending=False).iloc[0]
            start, end = max(0, int(best.start) - 15), int(best.end) + 15
        else:
            start, end = 0, min(explanation.lengths[index], 60)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in explanation.ids[index])
        logo_section.add(logo(explanation, index, start, end,
                              f"{explanation.ids[index]}: relevance of the observed bases, positions "
                              f"{start}-{min(end, explanation.lengths[index])}", out / "logos" / f"{name}.png"))
    written["logos"] = out / "logos"
    motif_section = page.section("Seqlets and motif matches")
    if len(seqlets):
        shown = seqlets.drop(columns=[c for c in ("threshold", "motifs_scanned") if c in seqlets]).copy()
        threshold = float(seqlets["threshold"].iloc[0]) if "threshold" in seqlets else float("nan")
        motif_section.add(paragraph(f"{len(seqlets)} seqlets: windows whose relevance exceeds the 99% quantile of a "
                                    f"position-shuffled null ({threshold:.3g}; see lrp_domains.bio.motifs)."),
                          table(shown, max_rows=40))
        if "motif_name" in seqlets:
            counts = seqlets[seqlets.motif_name.fillna("") != ""].motif_name.value_counts()
            if len(counts):
                motif_section.add(table(pd.DataFrame({"motif": counts.index, "seqlets": counts.to_numpy()}),
                                        caption="best JASPAR match (p <= 1e-3) per seqlet"))
    else:
        motif_section.add(paragraph("No seqlet passed the threshold."))
    written["report"] = page.write(out / "report.html")
    np.savetxt(out / "per_position.tsv", explanation.per_position.double().numpy(), delimiter="\t", fmt="%.6g")
    return written
