"""``lrp-domains bench genes``: which genes drive the default PBMC classifier, by method.

For each method, relevance of every gene for each cell's true class (``bulk_labels``) on the
700 cells of ``pbmc68k_reduced``, then:

- marker recall: the share of canonical PBMC markers (those among the 765 genes) in each class's
  top 20 / top 50 genes (mean relevance over the class's cells), averaged over the classes that
  have markers;
- DE overlap: the share of each class's top 50 that is also in its top 50 Wilcoxon differentially
  expressed genes (scanpy), averaged over classes;
- deletion: genes set to 0 (their mean: the data is z-scaled) most relevant first, and in a random
  order; the true-class probability at 0, 1, 2, 5, 10 and 20% of the genes removed; ABC = area
  between the random and the most-relevant-first curves (higher: the ranking finds what the model
  uses);
- seconds for the attributions (the fastest of ``repeats`` runs) and their ratio to gradient x
  input.

"Expression value" ranks genes by the standardized expression itself: it scores like a real
attribution on markers and DE, so only the deletion test tells a faithful explanation from a
restatement of the input.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from lrp_domains.bench.methods import select
from lrp_domains.evaluate import area, curve

COMPOSITES = select("epsilon", "epsilon-gamma", "zplus", "alpha2beta1")
BASELINES = select("gradient x input", "integrated gradients", "expression value", "random")
FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)


def attributions(
    model, values: torch.Tensor, target: torch.Tensor, composites: tuple[str, ...] = COMPOSITES
) -> dict[str, Callable[[], torch.Tensor]]:
    """One callable per method returning relevance ``(cells, genes)`` for ``target``."""
    from lrp_domains import evaluate as E
    from lrp_domains import explain

    found: dict[str, Callable[[], torch.Tensor]] = {
        name: (lambda name=name: explain(model, values, target, name, batch_size=256).relevance) for name in composites
    }
    found["gradient x input"] = lambda: E.gradient_x_input(model, values, target, batch_size=256).relevance
    found["integrated gradients"] = lambda: (
        E.integrated_gradients(model, values, target, steps=32, batch_size=256).relevance
    )
    found["expression value"] = lambda: values.clone()
    found["random"] = lambda: E.random_attribution(model, values, target).relevance
    return found


def _class_tops(relevance: pd.DataFrame, labels: pd.Series, n: int) -> dict[str, list[str]]:
    return {
        cls: relevance.loc[index].mean(0).sort_values(ascending=False).index[:n].tolist()
        for cls, index in labels.groupby(labels).groups.items()
    }


def de_tops(adata, groupby: str, n: int = 50) -> dict[str, list[str]]:
    """Top ``n`` Wilcoxon differentially expressed genes per group (scanpy)."""
    import scanpy as sc

    data = adata.copy()
    sc.tl.rank_genes_groups(data, groupby, method="wilcoxon", n_genes=n, use_raw=False)
    names = pd.DataFrame(data.uns["rank_genes_groups"]["names"])
    return {cls: names[cls].tolist() for cls in names.columns}


def run(methods: tuple[str, ...] | None = None, seed: int = 0, repeats: int = 5) -> tuple[list[dict], pd.DataFrame]:
    """Measure every method; returns the rows and the per-class marker table of the best composite."""
    import warnings

    from lrp_domains.bio.cells.pbmc_mlp import load_default_data, load_default_model, markers_in

    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    adata = load_default_data()
    model, genes, classes = load_default_model()
    values = torch.as_tensor(np.asarray(adata[:, genes].X, dtype=np.float32))
    labels = pd.Series(adata.obs["bulk_labels"].astype(str).to_numpy(), index=adata.obs_names.astype(str))
    target = torch.tensor([classes.index(c) for c in labels])
    markers = {cls: found for cls, found in markers_in(genes).items() if found and cls in set(labels)}
    de = de_tops(adata, "bulk_labels", 50)
    found = attributions(model, values, target)
    chosen = [m for m in (methods or found)]
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(values.shape, generator=generator)

    def probability(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(inputs).softmax(-1).gather(1, target[:, None])[:, 0].double()

    def remove(inputs: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
        return inputs.masked_fill(removed, 0.0)

    random_curve = curve(probability, values, order, remove, fractions=FRACTIONS)
    rows, tables = [], {}
    for name in chosen:
        seconds = float("inf")
        for _ in range(repeats):  # the fastest of a few runs: these take milliseconds
            start = time.perf_counter()
            relevance = found[name]().detach().double()
            seconds = min(seconds, time.perf_counter() - start)
        frame = pd.DataFrame(relevance.numpy(), index=labels.index, columns=genes)
        tops = {n: _class_tops(frame, labels, n) for n in (20, 50)}
        recall = {n: np.mean([len(set(m) & set(tops[n][c])) / len(m) for c, m in markers.items()]) for n in (20, 50)}
        overlap = np.mean([len(set(tops[50][c]) & set(de[c])) / 50 for c in tops[50] if c in de])
        morf = curve(probability, values, relevance, remove, fractions=FRACTIONS)
        abc = (area(random_curve, FRACTIONS) - area(morf, FRACTIONS)).mean().item()
        rows.append(
            {
                "method": name,
                "markers@20": recall[20],
                "markers@50": recall[50],
                "DE@50": overlap,
                "deletion ABC": abc,
                "seconds": seconds,
            }
        )
        tables[name] = pd.DataFrame(
            [
                {
                    "class": c,
                    "markers": ",".join(m),
                    "found@20": ",".join(sorted(set(m) & set(tops[20][c]))),
                    "found@50": ",".join(sorted(set(m) & set(tops[50][c]))),
                }
                for c, m in markers.items()
            ]
        )
    base = next((r["seconds"] for r in rows if r["method"] == "gradient x input"), None)
    for row in rows:
        row["time_ratio"] = row["seconds"] / base if base else float("nan")
    best = max((r for r in rows if r["method"] in COMPOSITES), key=lambda r: r["deletion ABC"], default=None)
    return rows, tables[best["method"]] if best else pd.DataFrame()


def print_table(rows: list[dict], markers: pd.DataFrame) -> None:
    """Print the rows and the best composite's marker table (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"bench genes: default PBMC MLP, 700 cells x 765 genes, true class, {torch.get_num_threads()} threads"
    )
    for column in ("method", "markers@20", "markers@50", "DE@50", "deletion ABC", "seconds", "x gradient x input"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        table.add_row(
            row["method"],
            f"{row['markers@20']:.2f}",
            f"{row['markers@50']:.2f}",
            f"{row['DE@50']:.2f}",
            f"{row['deletion ABC']:.3f}",
            f"{row['seconds']:.2f}",
            f"{row['time_ratio']:.2f}x",
        )
    console = Console()
    console.print(table)
    if len(markers):
        console.print(markers.to_string(index=False))
