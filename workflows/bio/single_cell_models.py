#!/usr/bin/env python
"""Gene relevance for the models single-cell researchers use: scANVI and a transformer over genes.

Trains both on ``scanpy.datasets.pbmc68k_reduced`` (offline, 700 PBMCs, 765 genes) on CPU,
explains each one's held-out cells for their annotated cell type, and writes, per model, the gene
report (rankings, known markers, Wilcoxon DE overlap) and ``explained.h5ad`` (``layers["lrp"]``,
rankings in ``uns["lrp"]``) for scanpy:

- scANVI (scvi-tools; ``lrp_domains.bio.cells.scvi_models``): counts in, as scvi-tools expects (recovered
  from the data's log-normalised ``.raw``), through the encoder's mean head and the classifier;
  LRP-epsilon. Held out: the default MLP's test cells (scANVI sees them unlabelled).
- gene transformer (``lrp_domains.bio.cells.gene_transformer``): each cell as its genes ranked by
  expression (Geneformer-style), a tiny BERT, AttnLRP through the text machinery; genes outside a
  cell's sentence get 0. Held out: its own stratified split.

Both models are saved next to the reports (safetensors and JSON), so the numbers can be recomputed.

    python workflows/bio/single_cell_models.py --out runs/single-cell
    python workflows/bio/single_cell_models.py --out runs/single-cell-quick --quick    # about a minute
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

LABELS = "bulk_labels"


def _report(explanation: Any, adata: Any, out: Path, title: str, top: int) -> dict[str, Path]:
    """The gene report and ``explained.h5ad`` of one model's explanation of ``adata``'s cells."""
    from lrp_domains.bio.cells.pbmc_mlp import markers_in
    from lrp_domains.report.genes import write_gene_report

    markers = markers_in(explanation.genes)
    written = write_gene_report(explanation, out, markers=markers, adata=adata, groupby=LABELS, top=top, title=title)
    explanation.to_anndata(adata.copy(), key="lrp", n=top).write_h5ad(out / "explained.h5ad")
    written["h5ad"] = out / "explained.h5ad"
    overlap = explanation.marker_overlap(markers)
    written["markers@20"] = float(overlap[overlap.k == 20].recall.mean())  # type: ignore[assignment]
    return written


def run_scanvi(adata: Any, out: Path, quick: bool, top: int) -> dict[str, Any]:
    """Train scANVI (or load it from ``out/model``), explain the held-out cells, write the report."""
    from lrp_domains.bio.cells import scvi_models
    from lrp_domains.bio.cells.pbmc_mlp import held_out_cells

    counts = scvi_models.pbmc_counts(adata)
    held_out = held_out_cells()
    train = {
        "held_out": held_out,
        "n_latent": 10,
        "n_hidden": 64 if quick else 128,
        "max_epochs": 20 if quick else 100,
        "seed": 0,
    }
    model = scvi_models.load_or_train(out / "model", counts, **train)
    cells = counts[held_out]
    explainer = scvi_models.explainer(model, "epsilon")
    labels = cells.obs[LABELS].astype(str).tolist()
    explanation = explainer.explain(cells, target=labels)
    accuracy = float((explanation.prediction.to_numpy() == cells.obs[LABELS].astype(str).to_numpy()).mean())
    written = _report(explanation, adata[held_out], out, "scANVI gene relevance (held-out cells, counts in)", top)
    return {"accuracy": accuracy, **written}


def run_gene_transformer(adata: Any, out: Path, quick: bool, top: int) -> dict[str, Any]:
    """Train the gene transformer (or load it from ``out/model``), explain its held-out cells,
    write the report."""
    from lrp_domains.bio.cells.gene_transformer import TrainedGeneTransformer, train_gene_transformer

    folder = out / "model"
    if (folder / "model.json").is_file():
        trained = TrainedGeneTransformer.load(folder)
    else:
        trained = train_gene_transformer(
            adata, labels_key=LABELS, seed=0, epochs=4 if quick else 40, max_genes=64 if quick else 256
        )
        trained.save(folder)
    cells = adata[trained.test_cells]
    labels = cells.obs[LABELS].astype(str).tolist()
    explanation = trained.explainer("attnlrp").explain(cells, target=labels)
    accuracy = float((explanation.prediction.to_numpy() == cells.obs[LABELS].astype(str).to_numpy()).mean())
    written = _report(explanation, cells, out, "Gene transformer relevance (held-out cells, AttnLRP)", top)
    return {"accuracy": accuracy, **written}


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the workflow; returns, per model, its held-out accuracy, markers@20 and written paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="short training (checks the workflow, weaker models)")
    parser.add_argument("--top", type=int, default=50, help="genes per cell type in the rankings")
    parser.add_argument("--models", default="scanvi,gene-transformer", help="comma-separated: scanvi, gene-transformer")
    args = parser.parse_args(argv)
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(chosen) - {"scanvi", "gene-transformer"})
    if unknown or not chosen:
        parser.error(f"--models: unknown {unknown}; choose scanvi, gene-transformer")

    from lrp_domains.bio.cells.pbmc_mlp import load_default_data

    adata = load_default_data()
    results: dict[str, dict[str, Any]] = {}
    if "scanvi" in chosen:
        results["scanvi"] = run_scanvi(adata, args.out / "scanvi", args.quick, args.top)
    if "gene-transformer" in chosen:
        results["gene-transformer"] = run_gene_transformer(adata, args.out / "gene-transformer", args.quick, args.top)
    for name, found in results.items():
        print(
            f"{name}: held-out accuracy {found['accuracy']:.2f}, known markers in each cell type's top 20 "
            f"(mean over types) {found['markers@20']:.2f}; report {found['report']}, {found['h5ad']}"
        )
    return results


if __name__ == "__main__":
    main()
