"""``lrp-domains bench scvi-job``: an scvi-tools user's job from the command line, timed.

In a temporary folder: synthetic counts (cells x genes, three cell types, a few unlabelled), a
SCANVI trained for a few epochs and saved with ``model.save`` as a user does, and the data as
``cells.h5ad``. Then the README's two commands (``bio genes`` on the saved folder, ``run h5ad``
on its run), each as its own process, timed from start to exit (start-up included).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from lrp_domains.bench.runs.commands import print_timings, time_commands

COMMANDS = [
    (
        "bio genes (a run + the report)",
        ["bio", "genes", "cells.h5ad", "--model", "scanvi_model", "--out", "report", "--no-progress"],
    ),
    ("run h5ad", ["run", "h5ad", "report/run", "--out", "explained.h5ad"]),
]


def make_inputs(folder: Path, cells: int = 2000, genes: int = 500, epochs: int = 5, seed: int = 0) -> None:
    """``cells.h5ad`` (Poisson counts; cell type k expresses its own block of genes four times as
    much; 10% unlabelled) and ``scanvi_model/`` (``SCANVI(n_hidden=32, n_latent=8)``, trained
    ``epochs`` epochs, ``model.save``)."""
    import anndata
    import pandas as pd
    import scvi

    rng = np.random.default_rng(seed)
    types = ("T cell", "B cell", "monocyte")
    labels = np.array([types[i % 3] for i in range(cells)], dtype=object)
    rates = np.full((cells, genes), 1.5)
    block = genes // 3
    for k in range(3):
        rates[labels == types[k], k * block : (k + 1) * block] *= 4.0
    counts = rng.poisson(rates * rng.uniform(0.5, 2.0, size=(cells, 1))).astype(np.float32)
    labels[: cells // 10] = "Unknown"
    obs = pd.DataFrame({"cell_type": labels}, index=[f"cell{i}" for i in range(cells)])
    data = anndata.AnnData(counts, obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(genes)]))
    data.write_h5ad(folder / "cells.h5ad")
    scvi.settings.seed = seed
    for name in ("lightning.pytorch", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        scvi.model.SCANVI.setup_anndata(data, labels_key="cell_type", unlabeled_category="Unknown")
        model = scvi.model.SCANVI(data, n_hidden=32, n_latent=8)
        model.train(max_epochs=epochs, accelerator="cpu", devices=1, enable_progress_bar=False)
        model.save(str(folder / "scanvi_model"))


def run(cells: int = 2000) -> list[tuple[str, float]]:
    """Make the inputs and time each command; returns ``(step, seconds)``."""
    return time_commands(COMMANDS, lambda folder: make_inputs(folder, cells=cells))


def print_table(timings: list[tuple[str, float]], cells: int) -> None:
    """The timings as a table."""
    print_timings(
        f"scvi-tools job: {cells} cells x 500 genes, SCANVI (n_hidden=32) saved with model.save, each command a "
        "new process",
        timings,
    )
