"""The filter-concept report: ``concepts.tsv``, conditional seqlets, CWM/PPM arrays, a logo per
filter and one page (see :mod:`lrp_domains.bio.concepts.filters`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from lrp_domains.bio.concepts.filters import FilterConcepts
from lrp_domains.files.writing import OutputFolder
from lrp_domains.report.blocks import Page, figure, paragraph, plain_text, table

#: The columns of ``concepts.tsv``, in order.
COLUMNS = (
    "concept",
    "share",
    "best_match",
    "match_id",
    "match_p",
    "match_e",
    "seqlets",
    "consensus",
    "reference_examples",
)


def matrix_logo(
    matrix: np.ndarray, alphabet: str, caption: str = "", path: str | Path | None = None, ylabel: str = "relevance"
) -> Markup:
    """A logo of an ``(A, W)`` matrix (a CWM: the mean relevance of each observed letter) as a figure."""
    import logomaker
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(matrix.T, columns=list(alphabet))
    with plain_text():
        fig, ax = plt.subplots(figsize=(max(4, matrix.shape[1] / 4), 1.8))
        logomaker.Logo(frame, ax=ax, color_scheme="classic")
        ax.set_xlabel("position in the aligned window")
        ax.set_ylabel(ylabel)
        return figure(fig, caption, path)


def write_concepts_report(
    concepts: FilterConcepts, out_dir: str | Path, title: str = "Filter concepts", notes: Sequence[str] = ()
) -> dict[str, Path]:
    """Write ``concepts.tsv`` (one row per described filter: :data:`COLUMNS`), ``seqlets.tsv``
    (every conditional seqlet, with its filter), ``cwm.npz`` and ``ppm.npz`` (``filter_<k>``:
    ``(A, width)``), ``channel_relevance.tsv`` (sequence x filter), ``logos/filter_<k>.png`` and
    ``report.html``."""
    folder = OutputFolder(out_dir, "concepts-report")
    frame = concepts.frame[list(COLUMNS)]
    written = {
        "concepts": folder.write_text("concepts.tsv", frame.to_csv(sep="\t", index=False)),
        "seqlets": folder.write_text("seqlets.tsv", concepts.seqlet_table.to_csv(sep="\t", index=False)),
    }
    for name, matrices in (("cwm", concepts.cwm), ("ppm", concepts.ppm)):
        with folder.atomic(f"{name}.npz") as temporary, temporary.open("wb") as handle:
            np.savez_compressed(handle, **{f"filter_{k}": v for k, v in matrices.items()})
        written[name] = folder.root / f"{name}.npz"
    relevance = pd.DataFrame(
        concepts.channel_relevance,
        index=concepts.ids,
        columns=[f"filter_{k}" for k in range(concepts.channel_relevance.shape[1])],
    )
    written["channel_relevance"] = folder.write_text(
        "channel_relevance.tsv", relevance.to_csv(sep="\t", index_label="id", float_format="%.6g")
    )
    page = Page(
        title,
        intro=f"Layer {concepts.layer}: {concepts.channel_relevance.shape[1]} filters over "
        f"{len(concepts.ids)} sequences; the {len(frame)} with the largest share are described.",
    )
    summary = page.section("Filters")
    summary.add(
        paragraph(
            "share: the filter's relevance (activation x modified gradient, summed over positions and "
            "sequences) over all filters' (Concept Relevance Propagation, Achtibat et al. 2023). "
            "seqlets: windows of the input relevance conditioned on the filter that pass the "
            "position-shuffled null; the CWM averages them, each re-centred on its strongest window. "
            "best_match: the JASPAR motif most similar to the seqlets' PPM, trimmed where the CWM is "
            "weak (TOMTOM statistics; named when its E-value is at most 0.05)."
        ),
        *(paragraph(n, note=True) for n in notes),
        table(frame, max_rows=100, digits=4),
    )
    logos = page.section("Logos")
    for row in frame.itertuples():
        cwm = concepts.cwm[row.concept]
        caption = (
            concepts.describe(row.concept) + f"; {row.seqlets} seqlets; strongest sequences: {row.reference_examples}"
        )
        if row.seqlets == 0:
            logos.add(paragraph(caption + " (no seqlet: no logo)", note=True))
            continue
        with folder.atomic(f"logos/filter_{row.concept}.png") as temporary:
            logos.add(matrix_logo(cwm, concepts.alphabet, caption, temporary))
    written["logos"] = folder.root / "logos"
    written["report"] = folder.write_text("report.html", page.render())
    folder.finish()
    return written
