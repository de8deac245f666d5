#!/usr/bin/env python
"""Gene importance per cell type, checked against known marker genes, and handed back to scanpy.

The recipe behind ``lrp-domains bio genes``, written out to copy: load the PBMC expression model
and data (``scanpy.datasets.pbmc68k_reduced``, offline), explain every cell of the held-out test
split (``--cells all`` for every cell) for its annotated cell type with LRP-epsilon, rank genes per
cell type, flag which top genes are known markers, compare with Wilcoxon differential expression,
write the gene report, and store the relevance in the AnnData (``layers["lrp"]``, rankings in
``uns["lrp"]``) as ``explained.h5ad`` for further work in scanpy.

    python workflows/bio/gene_importance.py --out runs/pbmc-genes
    python workflows/bio/gene_importance.py --out runs/pbmc-all --cells all --top 30
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from lrp_domains.bio import ExpressionExplainer
from lrp_domains.bio.cells.pbmc_mlp import held_out_cells, load_default_data, markers_in
from lrp_domains.report.genes import write_gene_report

LABELS = "bulk_labels"


def top_genes_with_markers(ranking: pd.DataFrame, markers: dict[str, list[str]], n: int = 10) -> pd.DataFrame:
    """Each class's ``n`` most relevant genes, with whether each is a known marker of that class."""
    top = ranking[ranking["rank"] <= n].copy()
    top["known_marker"] = [gene in markers.get(group, ()) for group, gene in zip(top["group"], top["gene"])]
    return top.reset_index(drop=True)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Run the workflow; returns the written paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--cells",
        choices=["test", "all"],
        default="test",
        help="the model's held-out test cells (default) or every cell",
    )
    parser.add_argument("--top", type=int, default=50, help="genes per cell type in the rankings")
    parser.add_argument("--composite", default="epsilon")
    args = parser.parse_args(argv)

    adata = load_default_data()
    if args.cells == "test":
        adata = adata[held_out_cells()].copy()
    explainer = ExpressionExplainer.default(composite=args.composite)
    labels = adata.obs[LABELS].astype(str).tolist()
    explanation = explainer.explain(adata, target=labels)

    markers = markers_in(explainer.genes)
    written = write_gene_report(
        explanation,
        args.out,
        markers=markers,
        adata=adata,
        groupby=LABELS,
        top=args.top,
        title=f"PBMC gene relevance ({args.cells} cells)",
    )
    flagged = top_genes_with_markers(explanation.rank_genes("class", args.top), markers)
    flagged.to_csv(args.out / "top10_markers.csv", index=False)
    written["top10_markers"] = args.out / "top10_markers.csv"
    # The AnnData keeps all its genes; those the model does not use get relevance 0.
    explanation.to_anndata(adata, key="lrp", n=args.top).write_h5ad(args.out / "explained.h5ad")
    written["h5ad"] = args.out / "explained.h5ad"

    overlap = explanation.marker_overlap(markers)
    print(
        f"{len(adata)} cells, {len(explainer.genes)} genes; known markers in each cell type's top 20 (mean over "
        f"types): {overlap[overlap.k == 20].recall.mean():.2f}"
    )
    for name, path in written.items():
        print(f"{name}: {path}")
    return written


if __name__ == "__main__":
    main()
