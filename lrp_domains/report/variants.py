"""The variant report: the top variants by effect, each as a two-row logo (reference window above,
alternative below, the variant's bases shaded) with the motif it loses or gains.

The table comes from :func:`~lrp_domains.bio.explain_variants`; the logos need each shown
variant's two windows explained again (two windows per variant: ``top`` variants cost ``2 * top``
windows, whatever the size of the table).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from lrp_domains.files.writing import OutputFolder
from lrp_domains.report.blocks import Page, figure, format_p, paragraph, plain_text, table

SHOWN_COLUMNS = (
    "chrom",
    "pos",
    "id",
    "ref",
    "alt",
    "delta_score",
    "delta_relevance",
    "ref_motif",
    "ref_motif_p",
    "alt_motif",
    "alt_motif_p",
    "motif_change",
)


def _motif_text(row: pd.Series) -> str:
    """``CTCF lost (p 1e-10 -> none)`` style text for a row with motif columns."""
    if "motif_change" not in row or not (row["ref_motif"] or row["alt_motif"]):
        return "no motif named at the variant"

    def p(value: float) -> str:
        return "none" if not isinstance(value, float) or math.isnan(value) else f"p {format_p(value)}"

    change = row["motif_change"]  # one of motifs.MOTIF_CHANGES, as in variants.tsv
    return (
        f"{row['ref_motif'] or 'no motif'} ({p(row['ref_motif_p'])}) -> {row['alt_motif'] or 'no motif'} "
        f"({p(row['alt_motif_p'])}): {change}"
    )


def two_row_logo(explanation: Any, center: int, ref: str, alt: str, flank: int = 20, title: str = "") -> Any:
    """A figure with the reference window's logo (row 0 of ``explanation``) above the alternative
    window's (row 1), from ``center - flank`` to ``center + len(allele) + flank``, the variant's
    bases shaded in both. Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lrp_domains.bio.motifs.seqlets import plot_logo

    length = explanation.lengths[0]
    start = max(0, center - flank)
    end = min(length, center + max(len(ref), len(alt)) + flank)
    # one y scale for both rows, so the change reads off the picture
    fig, axes = plt.subplots(2, 1, figsize=(max(5, (end - start) / 6), 3.8), sharey=True)
    for ax, index, allele, name in ((axes[0], 0, ref, "reference"), (axes[1], 1, alt, "alternative")):
        plot_logo(explanation, index, start, end, ax=ax)
        ax.axvspan(center - 0.5, center + len(allele) - 0.5, color="#f2c14e", alpha=0.35, zorder=0)
        ax.set_title("")
        ax.set_title(f"{name}: {allele}", fontsize=9, loc="left", parse_math=False)
        ax.set_xlim(start - 0.5, end - 0.5)
        ax.set_xlabel("")
    axes[1].set_xlabel("position in the window")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def write_variant_report(
    explainer: Any,
    variants: pd.DataFrame,
    fasta: Any,
    out_dir: str | Path,
    top: int = 10,
    window: int | None = None,
    target: Any = None,
    flank: int = 20,
    title: str = "Variant effects",
    folder: OutputFolder | None = None,
) -> dict[str, Path]:
    """Write ``report.html`` (the top ``top`` explained variants of ``variants``, by
    ``|delta_score|``: a table and a two-row logo each, also saved as ``logos/<n>_<chrom>_<pos>.png``)
    into ``out_dir`` (or into ``folder``, an open :class:`OutputFolder` the caller finishes).
    ``explainer``, ``fasta``, ``window`` and ``target`` as given to
    :func:`~lrp_domains.bio.explain_variants`."""
    from lrp_domains.bio.sequences.genome import default_window, open_fasta
    from lrp_domains.bio.variants.effects import VariantRecord, variant_windows

    own = folder is None
    folder = folder or OutputFolder(out_dir, "variant-report")
    window = default_window(explainer) if window is None else int(window)
    done = variants[variants["status"] == "ok"]
    shown = done.reindex(done["delta_score"].abs().sort_values(ascending=False).index).head(max(0, top))
    page = Page(
        title,
        intro=f"{len(variants)} variant alleles, {len(done)} explained; the {len(shown)} with the "
        "largest change in the explained output are shown.",
    )
    section = page.section("Top variants")
    section.add(
        paragraph(
            "delta_score: the alternative window's explained output minus the reference window's. "
            "delta_relevance: the relevance of ALT's bases minus REF's. Motifs: the best JASPAR match "
            "of the strongest seqlet at the variant in each window; the change says what became of "
            "the reference motif at its site: lost, weakened, strengthened, changed, gained, kept (still "
            "there, about as strong) or none (no motif named in either window; "
            "lrp_domains.bio.variants.motifs). p-values are exact PSSM match p-values."
        ),
        table(shown[[c for c in SHOWN_COLUMNS if c in shown]], max_rows=max(1, top)),
    )
    logos = page.section("Logos")
    written: dict[str, Path] = {}
    genome, opened = open_fasta(fasta)
    try:
        with plain_text():
            for n, (_, row) in enumerate(shown.iterrows(), start=1):
                record = VariantRecord(row["chrom"], int(row["pos"]), str(row["id"]), row["ref"], row["alt"], 0)
                windows = variant_windows(record, genome, window)
                explanation = explainer.explain([windows.ref, windows.alt], ids=["ref", "alt"], target=target)
                label = f"{row['chrom']}:{int(row['pos'])} {row['ref']}>{row['alt']}"
                fig = two_row_logo(
                    explanation,
                    windows.center,
                    row["ref"],
                    row["alt"],
                    flank,
                    f"{label}, delta score {row['delta_score']:.3g}",
                )
                name = f"logos/{n:03d}_{row['chrom']}_{int(row['pos'])}.png"
                with folder.atomic(name) as temporary:
                    logos.add(figure(fig, f"{label}: {_motif_text(row)}", temporary))
    finally:
        if opened:
            genome.close()
    if not len(shown):
        logos.add(paragraph("No variant was explained (every row has a status other than ok)."))
    written["logos"] = folder.root / "logos"
    written["report"] = folder.write_text("report.html", page.render())
    if own:
        folder.finish()
    return written
