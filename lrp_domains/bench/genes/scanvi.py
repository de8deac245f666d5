"""``lrp-domains bench genes --models scanvi``: which genes drive scANVI's cell-type prediction, by method.

A small scANVI (:func:`lrp_domains.bio.cells.scvi_models.train_scanvi`: 10 latent dimensions, 128 hidden
units, 100 epochs, CPU) is trained on the counts of ``pbmc68k_reduced``
(:func:`~lrp_domains.bio.cells.scvi_models.pbmc_counts`) with the default MLP's held-out test cells
unlabelled, and cached under ``cache_dir`` so re-runs do not retrain. On the held-out cells
(``cells="held-out"``, default) or all 700 (``cells="all"``), each method explains the true
class's logit of :func:`~lrp_domains.bio.cells.scvi_models.scanvi_classifier` (counts in), then, as in
:mod:`lrp_domains.bench.genes.mlp`:

- markers@20 / markers@50: share of each class's canonical markers (those among the 765 genes) in
  its top 20 / 50 genes by mean relevance over the class's cells, averaged over classes;
- DE@50: share of each class's top 50 also in its top 50 Wilcoxon DE genes (all 700 cells, as in
  the MLP bench);
- deletion ABC: genes' counts set to 0, most relevant first vs a random order, true-class
  probability at 0-20 % of the genes removed; area between the random and the most-relevant-first
  curves (higher: the ranking finds what the model uses);
- ABC - IG: the mean per-cell difference to integrated gradients' ABC (32 steps) and its
  standard error (paired: same cells, same random order);
- seconds (fastest of ``repeats``, all methods interleaved in each repeat) and cost in
  gradients (forward + backward passes per cell: LRP and gradient x input 1, integrated gradients
  ``steps``; 8 steps give the same ABC as 32 here, so both are shown).

"Expression value" ranks genes by ``log1p(counts)``, what the encoder reads.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lrp_domains.bench.cache import cache_dir as bench_cache
from lrp_domains.bench.genes.mlp import de_tops
from lrp_domains.bench.methods import gradients, select
from lrp_domains.evaluate import area, curve

COMPOSITES = select("epsilon", "epsilon-gamma", "zplus", "alpha2beta1")
BASELINES = select(
    "gradient x input", "integrated gradients", "integrated gradients, 8 steps", "expression value", "random"
)
FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
IG_STEPS = 32
IG_FEW_STEPS = 8
TRAIN = {"n_latent": 10, "n_hidden": 128, "n_layers": 1, "max_epochs": 100, "seed": 0}


def _cache_path(cache_dir: Path, settings: dict, held_out: list[str]) -> Path:
    """One folder per training setting and held-out split (a changed split retrains)."""
    import hashlib

    key = "-".join(f"{k}{v}" for k, v in sorted(settings.items()))
    split = hashlib.sha256("\n".join(sorted(held_out)).encode()).hexdigest()[:10]
    return Path(cache_dir) / f"scanvi-pbmc68k-{key}-split{split}"


def attributions(
    model: torch.nn.Module, values: torch.Tensor, target: torch.Tensor, composites: tuple[str, ...] = COMPOSITES
) -> dict[str, tuple[Callable[[], torch.Tensor], int]]:
    """Per method: a callable returning relevance ``(cells, genes)`` for ``target``, and its cost
    in gradients (forward + backward passes per cell)."""
    from lrp_domains import evaluate as E
    from lrp_domains import explain
    from lrp_domains.bio.cells.scvi_models import scanvi_composite

    found: dict[str, tuple[Callable[[], torch.Tensor], int]] = {}
    for name in composites:
        composite = scanvi_composite(name)
        found[name] = (
            lambda c=composite: (
                explain(model, values, target, c, batch_size=256, strict=True, check_delta=False).relevance
            ),
            gradients(name),
        )
    found["gradient x input"] = (
        lambda: E.gradient_x_input(model, values, target, batch_size=256).relevance,
        gradients("gradient x input"),
    )
    found["integrated gradients"] = (
        lambda: E.integrated_gradients(model, values, target, steps=IG_STEPS, batch_size=256).relevance,
        gradients("integrated gradients", IG_STEPS),
    )
    found["integrated gradients, 8 steps"] = (
        lambda: E.integrated_gradients(model, values, target, steps=IG_FEW_STEPS, batch_size=256).relevance,
        gradients("integrated gradients, 8 steps"),
    )
    found["expression value"] = (lambda: torch.log1p(values), gradients("expression value"))
    found["random"] = (lambda: E.random_attribution(model, values, target).relevance, gradients("random"))
    return found


def _class_tops(relevance: pd.DataFrame, labels: pd.Series, n: int) -> dict[str, list[str]]:
    return {
        cls: relevance.loc[index].mean(0).sort_values(ascending=False).index[:n].tolist()
        for cls, index in labels.groupby(labels).groups.items()
    }


def run(
    cache_dir: str | Path | None = None,
    cells: str = "held-out",
    methods: tuple[str, ...] | None = None,
    seed: int = 0,
    repeats: int = 10,
    threads: int | None = 1,
) -> list[dict]:
    """Train (or load) scANVI and measure every method; one row per method (see the module docstring).

    ``threads``: torch threads for the measurement (set after scvi-tools is imported, which sets
    its own); None keeps torch's setting."""
    import scanpy as sc

    from lrp_domains.bio.cells.pbmc_mlp import held_out_cells, markers_in
    from lrp_domains.bio.cells.scvi_models import classes_of, genes_of, load_or_train, pbmc_counts, scanvi_classifier

    if cells not in ("held-out", "all"):
        raise ValueError(f"cells must be 'held-out' or 'all', got {cells!r}")
    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    original = sc.datasets.pbmc68k_reduced()
    counts = pbmc_counts(original)
    held_out = held_out_cells()
    path = _cache_path(Path(cache_dir) if cache_dir is not None else bench_cache(), TRAIN, held_out)
    scanvi = load_or_train(path, counts, held_out=held_out, **TRAIN)
    model = scanvi_classifier(scanvi).eval()
    genes, classes = genes_of(scanvi), classes_of(scanvi)
    chosen_cells = counts.obs_names.isin(held_out) if cells == "held-out" else np.ones(counts.n_obs, bool)
    data = counts[chosen_cells, genes]
    values = torch.as_tensor(np.asarray(data.X, dtype=np.float32))
    labels = pd.Series(data.obs["bulk_labels"].astype(str).to_numpy(), index=data.obs_names.astype(str))
    target = torch.tensor([classes.index(c) for c in labels])
    markers = {cls: found for cls, found in markers_in(genes).items() if found and cls in set(labels)}
    with warnings.catch_warnings():  # scanpy's log fold changes of all-zero genes: its noise, not ours
        warnings.simplefilter("ignore", RuntimeWarning)
        de = de_tops(original, "bulk_labels", 50)
    if threads is not None:  # after scanpy's DE, which resets torch's thread count
        torch.set_num_threads(threads)
    found = attributions(model, values, target)
    chosen = list(methods or found)
    order = torch.rand(values.shape, generator=torch.Generator().manual_seed(seed))

    def probability(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(inputs).softmax(-1).gather(1, target[:, None])[:, 0].double()

    def remove(inputs: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
        return inputs.masked_fill(removed, 0.0)  # deletion on counts: the gene's count set to 0

    with torch.no_grad():
        accuracy = float((model(values).argmax(1) == target).double().mean())
    random_curve = curve(probability, values, order, remove, fractions=FRACTIONS)
    seconds = dict.fromkeys(chosen, float("inf"))
    relevance: dict[str, torch.Tensor] = {}
    for _ in range(repeats):  # interleaved: every method once per repeat, the fastest kept
        for name in chosen:
            start = time.perf_counter()
            result = found[name][0]().detach().double()
            seconds[name] = min(seconds[name], time.perf_counter() - start)
            relevance[name] = result
    rows, per_cell = [], {}
    for name in chosen:
        frame = pd.DataFrame(relevance[name].numpy(), index=labels.index, columns=genes)
        tops = {n: _class_tops(frame, labels, n) for n in (20, 50)}
        recall = {n: np.mean([len(set(m) & set(tops[n][c])) / len(m) for c, m in markers.items()]) for n in (20, 50)}
        overlap = np.mean([len(set(tops[50][c]) & set(de[c])) / 50 for c in tops[50] if c in de])
        morf = curve(probability, values, relevance[name], remove, fractions=FRACTIONS)
        per_cell[name] = area(random_curve, FRACTIONS) - area(morf, FRACTIONS)
        abc = per_cell[name].mean().item()
        rows.append(
            {
                "method": name,
                "markers@20": float(recall[20]),
                "markers@50": float(recall[50]),
                "DE@50": float(overlap),
                "deletion ABC": abc,
                "seconds": seconds[name],
                "gradients": found[name][1],
                "cells": len(labels),
                "accuracy": accuracy,
                "model": "scANVI",
                "threads": torch.get_num_threads(),
            }
        )
    base = seconds.get("gradient x input")
    reference = per_cell.get("integrated gradients")
    for row in rows:
        row["time_ratio"] = row["seconds"] / base if base else float("nan")
        # paired over cells: the same cells, the same random order
        diff = per_cell[row["method"]] - reference if reference is not None else torch.full((1,), float("nan"))
        row["ABC - IG"] = diff.mean().item()
        row["ABC - IG se"] = (diff.std() / len(diff) ** 0.5).item() if len(diff) > 1 else float("nan")
    return rows


def print_table(rows: list[dict]) -> None:
    """Print the rows (rich)."""
    from rich.console import Console
    from rich.table import Table

    first = rows[0] if rows else {}
    table = Table(
        title=f"bench genes: scANVI on pbmc68k_reduced counts, {first.get('cells', 0)} cells x 765 genes, "
        f"true class (accuracy {first.get('accuracy', float('nan')):.2f}), "
        f"{first.get('threads', torch.get_num_threads())} threads"
    )
    for column in (
        "method",
        "markers@20",
        "markers@50",
        "DE@50",
        "deletion ABC",
        "ABC - IG (se)",
        "seconds",
        "gradients",
        "x gradient x input",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        table.add_row(
            row["method"],
            f"{row['markers@20']:.2f}",
            f"{row['markers@50']:.2f}",
            f"{row['DE@50']:.2f}",
            f"{row['deletion ABC']:.3f}",
            f"{row['ABC - IG']:+.4f} ({row['ABC - IG se']:.4f})",
            f"{row['seconds']:.3f}",
            str(row["gradients"]),
            f"{row['time_ratio']:.2f}x",
        )
    Console(width=max(Console().width, 130)).print(table)
