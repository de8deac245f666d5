"""The gene report: tables, figures and one HTML page for a :class:`GeneExplanation`."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrp_domains.bio.cells.genes import GeneExplanation
from lrp_domains.core.engine.finite import NonFiniteOutputs
from lrp_domains.files.writing import OutputFolder
from lrp_domains.report.blocks import Page, figure, paragraph, plain_text, table
from lrp_domains.report.ledger import gene_shares, layer_figure, mean_sentence


def _heatmap(explanation: GeneExplanation, per_class: int = 5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    groups = explanation.target if explanation.target is not None else explanation.prediction
    means = explanation.relevance.groupby(groups.to_numpy()).mean()
    genes = list(dict.fromkeys(g for cls in means.index for g in means.loc[cls].nlargest(per_class).index))
    data = means[genes]
    limit = float(abs(data.to_numpy()).max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(genes) + 2), max(3, 0.4 * len(data) + 1.5)))
    sns.heatmap(data, cmap="RdBu_r", center=0, vmin=-limit, vmax=limit, ax=ax, cbar_kws={"label": "mean relevance"})
    ax.set_xlabel(f"top {per_class} genes of each class")
    ax.set_ylabel("explained class")
    return fig


def _bars(explanation: GeneExplanation, per_class: int = 10):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    ranking = explanation.rank_genes("class", per_class)
    classes = list(dict.fromkeys(ranking.group))
    columns = min(3, len(classes))
    rows = -(-len(classes) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.6 * rows), squeeze=False)
    for ax, cls in zip(axes.flat, classes):
        block = ranking[ranking.group == cls]
        colors = ["#c0392b" if v >= 0 else "#2e6bd1" for v in block.mean_relevance]
        sns.barplot(x=block.mean_relevance, y=block.gene, hue=block.gene, palette=colors, legend=False, ax=ax)
        ax.set_title(cls, fontsize=10)
        ax.set_xlabel("mean relevance")
        ax.set_ylabel("")
    for ax in list(axes.flat)[len(classes) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _finite_samples(explanation: GeneExplanation) -> np.ndarray:
    """Per sample: True where the explained score and every gene's relevance are finite."""
    return np.isfinite(explanation.explained.to_numpy(dtype=float)) & np.isfinite(
        explanation.relevance.to_numpy(dtype=float)
    ).all(axis=1)


def _samples(explanation: GeneExplanation, keep: np.ndarray) -> GeneExplanation:
    """The samples where ``keep`` is True."""
    target = None if explanation.target is None else explanation.target[keep]
    return dataclasses.replace(
        explanation,
        relevance=explanation.relevance[keep],
        output=explanation.output[keep],
        prediction=explanation.prediction[keep],
        target=target,
        explained=explanation.explained[keep],
        delta=explanation.delta[keep],
        ledger_rows=None if explanation.ledger_rows is None else explanation.ledger_rows.subset(np.flatnonzero(keep)),
    )


def _few(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(map(str, names[:limit]))
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def write_gene_report(
    explanation: GeneExplanation,
    out_dir: str | Path,
    *,
    markers: Mapping[str, Sequence[str]] | None = None,
    adata: Any = None,
    groupby: str | None = None,
    top: int = 50,
    title: str = "Gene relevance",
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``relevance.parquet`` (samples x genes), ``top_genes.csv``, ``heatmap.png``,
    ``bars.png``, ``markers.csv`` (with ``markers``), ``de_overlap.csv`` (with ``adata`` and
    ``groupby``; needs scanpy) and ``report.html`` with all of it. Returns the paths.

    Samples whose explained score or relevance is NaN or Inf are named in a warning and a note
    and left out of everything but ``relevance.parquet``; when every sample is, a
    :class:`~lrp_domains.core.engine.finite.NonFiniteOutputs` error is raised before anything is written."""
    full = explanation
    finite = _finite_samples(explanation)
    if len(finite) and not finite.any():
        raise NonFiniteOutputs(len(finite), "samples")
    if not finite.all():
        bad = [str(name) for name in explanation.relevance.index[~finite]]
        message = (
            f"{len(bad)} of {len(finite)} samples have a NaN or Inf explained score or relevance: {_few(bad)}; "
            "they are left out of the rankings, figures and tables (relevance.parquet keeps them)"
        )
        warnings.warn(message, stacklevel=3)
        notes = [*notes, message + "."]
        explanation = _samples(explanation, finite)
        if adata is not None:
            adata = adata[finite]
    folder = OutputFolder(out_dir, "gene-report")
    written: dict[str, Path] = {}
    with folder.atomic("relevance.parquet") as temporary:
        full.relevance.to_parquet(temporary)
    written["relevance"] = folder.root / "relevance.parquet"
    ranking = explanation.rank_genes("class", top)
    written["top_genes"] = folder.write_text("top_genes.csv", ranking.to_csv(index=False))

    page = Page(
        title,
        intro=f"{len(full.relevance)} samples x {full.relevance.shape[1]} genes, composite {explanation.composite}.",
    )
    summary = page.section("Summary")
    groups = explanation.target if explanation.target is not None else explanation.prediction
    counts = pd.DataFrame(
        {
            "class": groups.value_counts().index,
            "samples": groups.value_counts().to_numpy(),
        }
    )
    given = explanation.target is not None and explanation.target_given
    if explanation.target is None:
        explained = "the value its target function picked (samples grouped by predicted class)"
    else:
        explained = "given class (its label)" if given else "predicted class (no labels were given)"
    lines = [f"Relevance is seeded with the explained score (the logit) of each sample's {explained}."]
    if given:
        agreement = (explanation.prediction == explanation.target).mean()
        lines.append(f"The model predicts the given class for {agreement:.1%} of the samples.")
    where = gene_shares(explanation)
    if where is None:
        lines.append(
            f"Median |delta| (explained score minus summed relevance): {explanation.delta.abs().median():.4f}; "
            "the biases of the layers absorb that share."
        )
    else:
        lines.append(f"Where the explained score went, mean over the samples: {mean_sentence(where, 'the logit')}.")
    summary.add(*(paragraph(line) for line in lines), *(paragraph(note, note=True) for note in notes), table(counts))
    if explanation.ledger_rows is not None:
        fig = layer_figure(explanation.ledger_rows, explanation.explained.to_numpy().tolist())
        with folder.atomic("ledger.png") as temporary:
            chart = figure(
                fig, "What each layer absorbed (positive) or created (negative), mean over the samples", temporary
            )
        written["ledger"] = folder.root / "ledger.png"
        summary.add(chart)

    figures = page.section("Top genes per class")
    with plain_text():
        with folder.atomic("heatmap.png") as temporary:
            figures.add(figure(_heatmap(explanation), "Mean relevance of each class's top genes, by class.", temporary))
        with folder.atomic("bars.png") as temporary:
            figures.add(
                figure(
                    _bars(explanation), "Top 10 genes per class (mean relevance over the class's samples).", temporary
                )
            )
    written["heatmap"], written["bars"] = folder.root / "heatmap.png", folder.root / "bars.png"
    figures.add(table(ranking[ranking["rank"] <= 10], max_rows=200))

    if markers:
        overlap = explanation.marker_overlap(markers)
        written["markers"] = folder.write_text("markers.csv", overlap.to_csv(index=False))
        absent = {
            row["class"]: row["absent_genes"]
            for _, row in overlap.drop_duplicates("class").iterrows()
            if row["absent_genes"]
        }
        lacking = (
            [
                paragraph(
                    "Known markers not among the model's genes, left out of the recall (absent_genes): "
                    + "; ".join(f"{cls}: {genes.replace(',', ', ')}" for cls, genes in absent.items())
                    + ".",
                    note=True,
                )
            ]
            if absent
            else []
        )
        page.section("Known markers").add(
            paragraph("Share of each class's known marker genes (those the model has) in its top 20 and top 50."),
            *lacking,
            table(overlap),
        )
    if adata is not None and groupby is not None:
        de = explanation.compare_with_de(adata, groupby, n=top)
        written["de"] = folder.write_text("de_overlap.csv", de.to_csv(index=False))
        page.section("Differential expression").add(
            paragraph(
                f"Overlap of each class's top {top} genes with its top {top} Wilcoxon differentially "
                "expressed genes (scanpy)."
            ),
            table(de),
        )
    written["report"] = folder.write_text("report.html", page.render())
    folder.write_text(
        "summary.json", json.dumps({"samples": len(full.relevance), "composite": explanation.composite}, indent=1)
    )
    folder.finish()
    return written
