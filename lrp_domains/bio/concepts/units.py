"""Hidden units of an expression model: their relevance share, the genes they read, the classes they
serve and their reference cells ("unit 41: MS4A1, CD79A, CD79B; CD19+ B").

Built on Concept Relevance Propagation (CRP; Achtibat et al., "From attribution maps to
human-understandable explanations through Concept Relevance Propagation", *Nature Machine
Intelligence* 5, 1006-1019, 2023) in :mod:`lrp_domains.core.latent`: a hidden unit's relevance is its
activation times the modified gradient arriving there (CRP Eq. 5); its gene relevance is the input
relevance of the backward pass seeded at that unit only (conditional relevance, CRP Eq. 6); its
reference cells are the cells where it receives the most relevance (CRP's *relevance maximization*).

The full conditional relevance is ``cells x units x genes``; :func:`hidden_units` never holds it:
it explains chunks of cells and adds each chunk's per-unit per-gene sums up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lrp_domains.bio.cells.expression import ClassTarget, ExpressionExplainer
from lrp_domains.core.engine.attribution import eval_mode, model_dtype
from lrp_domains.core.engine.targets import resolve_targets
from lrp_domains.core.latent import explain_concepts

__all__ = ["UnitTable", "default_layer", "hidden_units", "write_unit_table"]

#: Most conditional-relevance values (cells x units x genes) held at once; chunks of cells stay below it.
ELEMENTS_PER_CHUNK = 1 << 24


@dataclass
class UnitTable:
    """Hidden units of one layer, most relevant first (see :func:`hidden_units`).

    Attributes
    ----------
    layer, at:
        The module whose ``at`` (``"output"`` or ``"input"``) holds the units.
    frame:
        One row per returned unit, by decreasing ``share``: ``unit`` (index in the layer), ``share``,
        ``classes`` (the classes it serves, comma-joined, most served first), ``top_genes``
        (comma-joined, by decreasing conditional relevance, see ``genes_from``), ``low_genes``
        (those of the top genes whose mean input over the same cells is below zero: for z-scored
        data such as the default model's, below the gene's average, so their relevance comes from
        low expression) and ``reference_cells`` (comma-joined sample names, most relevance first).
    channel_relevance:
        ``cells x units`` (the returned units, in ``frame`` order): each unit's relevance per cell.
    gene_relevance:
        ``units x genes``: each returned unit's conditional gene relevance, averaged over all cells
        (additive: summed over all units of a layer that every path runs through, it is the mean
        gene relevance of :meth:`ExpressionExplainer.explain`).
    served_gene_relevance:
        ``units x genes``: the same averaged over the cells of the classes the unit serves (over all
        cells for a unit that serves none).
    class_share:
        ``units x classes``: each returned unit's relevance share within the cells of each class
        (NaN for a class with no cells, or whose cells carry no positive total relevance).
    groups:
        The class of each cell that the shares are taken over (the explained class; the predicted
        class when a callable chose the explained value).
    explained:
        The explained score per cell.
    total:
        Each cell's relevance at the layer, summed over all of its units.
    genes_from:
        Which of the two gene relevances ranked ``top_genes``: ``"served"`` or ``"all"``.
    """

    layer: str
    at: str
    frame: pd.DataFrame
    channel_relevance: pd.DataFrame
    gene_relevance: pd.DataFrame
    served_gene_relevance: pd.DataFrame
    class_share: pd.DataFrame
    groups: pd.Series
    explained: pd.Series
    total: pd.Series
    genes_from: str = "served"

    @property
    def units(self) -> list[int]:
        """The returned units, in ``frame`` order."""
        return [int(u) for u in self.frame["unit"]]

    def to_frame(self) -> pd.DataFrame:
        """A copy of :attr:`frame`."""
        return self.frame.copy()

    def lines(self, n: int | None = None, genes: int = 3) -> list[str]:
        """``"unit 41: MS4A1, CD79A, CD79B; CD19+ B"`` for the first ``n`` units (all: None), with
        ``genes`` top genes each; a gene among ``low_genes`` is marked ``"(low)"``."""
        rows = self.frame if n is None else self.frame.head(n)
        out = []
        for row in rows.itertuples(index=False):
            low = set(row.low_genes.split(", ")) if row.low_genes else set()
            top = [g + (" (low)" if g in low else "") for g in row.top_genes.split(", ")[:genes] if g]
            out.append(f"unit {row.unit}: {', '.join(top)}; {row.classes or '-'}")
        return out


# -- the default layer ---------------------------------------------------------------------------
def default_layer(model: nn.Module, example: torch.Tensor) -> tuple[str, str]:
    """``(name, at)`` of the hidden units that feed the classifier, found by one forward of ``example``.

    The classifier is the last ``nn.Linear`` to run. The units are the output of the leaf module
    that computed the classifier's input (the last one to run, when several return the same tensor):
    for :func:`~lrp_domains.bio.cells.pbmc_mlp.build_mlp`'s ``Linear, ReLU, ..., Linear`` the ReLU
    before the final Linear (``("3", "output")`` for sizes ``[765, 128, 64, 10]``). When no module
    computed it (an activation written as a function in ``forward``), the classifier's input:
    ``(classifier name, "input")``.
    """
    leaves = [(name, m) for name, m in model.named_modules() if not any(True for _ in m.children())]
    calls: list[tuple[str, nn.Module, Any, Any]] = []
    handles = [
        m.register_forward_hook(lambda mod, args, out, name=name: calls.append((name, mod, args, out)))
        for name, m in leaves
    ]
    try:
        with torch.no_grad(), eval_mode(model):
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    linear = [i for i, (_, mod, _, _) in enumerate(calls) if isinstance(mod, nn.Linear)]
    if not linear:
        raise ValueError(
            "the model runs no nn.Linear, so it has no classifier layer to find its hidden units by; "
            "name the layer with layer= (a name from model.named_modules())"
        )
    last = linear[-1]
    name, _, args, _ = calls[last]
    feed = args[0] if args else None
    if feed is example:
        raise ValueError(
            f"the model's last Linear ({name!r}) reads the genes directly: it has no hidden layer; name one with layer="
        )
    for earlier in reversed(calls[:last]):
        if earlier[3] is feed:
            return earlier[0], "output"
    return name, "input"


# -- the table ------------------------------------------------------------------------------------
def hidden_units(
    explainer: ExpressionExplainer,
    data: Any,
    layer: str | None = None,
    target: ClassTarget = None,
    units: Sequence[int] | None = None,
    top_genes: int = 10,
    top_units: int | None = None,
    batch_size: int = 256,
    examples: int = 5,
    *,
    at: str = "output",
    max_classes: int = 3,
    genes_from: str = "served",
    missing: str = "error",
) -> UnitTable:
    """Hidden units of an expression model with their top genes, the classes they serve and their
    reference cells (CRP: Achtibat et al., *Nature Machine Intelligence* 2023).

    Parameters
    ----------
    explainer:
        Its model, genes, classes and composite are used; the model comes back unchanged.
    data:
        An AnnData, a DataFrame (columns = genes) or an array in the model's gene order (see
        :meth:`ExpressionExplainer.align`).
    layer:
        A module name from ``model.named_modules()`` whose ``at`` holds the units on axis 1. Default:
        the units that feed the classifier (:func:`default_layer`: for an ``nn.Sequential`` MLP the
        activation before the final Linear).
    target:
        As for :meth:`ExpressionExplainer.explain`: None (each cell's predicted class), a class name
        or index, one per cell (e.g. the true labels), or a callable on the scores.
    units:
        The units to describe (default: all of the layer's).
    top_genes:
        Genes listed per unit.
    top_units:
        Keep only this many units of ``units``, those with the largest share (default: all). Only
        they are conditioned on, so a few units of a wide layer cost little.
    batch_size:
        Cells per pass (fewer when ``cells x units x genes`` would exceed :data:`ELEMENTS_PER_CHUNK`).
    examples:
        Reference cells per unit.
    at:
        ``"output"`` or ``"input"`` of ``layer`` (ignored when ``layer`` is None).
    max_classes:
        At most this many classes listed per unit.
    genes_from:
        ``"served"`` (default): rank a unit's genes by their conditional relevance averaged over the
        cells of the classes it serves; ``"all"``: over all cells.
    missing:
        As for :meth:`ExpressionExplainer.align`.

    Returns
    -------
    UnitTable
        Per unit, with ``R[i, u]`` unit ``u``'s relevance in cell ``i`` (activation x modified
        gradient, CRP Eq. 5) and ``T[i] = sum_u R[i, u]`` the cell's relevance at the layer:

        - ``share``: ``mean_i R[i, u] / mean_i T[i]`` (the shares of all units sum to 1);
          ``class_share``: the same over the cells of one class.
        - ``classes`` (the classes it serves): those where its class share is positive and at least
          half its largest class share, largest first, at most ``max_classes``. Cells are grouped by
          the explained class (the predicted one for callable targets).
        - ``top_genes``: genes by decreasing conditional relevance (CRP Eq. 6: relevance seeded at the
          unit only), averaged over the cells of the classes the unit serves (``genes_from="served"``,
          :attr:`UnitTable.served_gene_relevance`) or over all cells (``"all"``,
          :attr:`UnitTable.gene_relevance`, additive over units: summed over every unit of a layer
          that all paths run through, it is the mean gene relevance of
          :meth:`ExpressionExplainer.explain`). A cell where the unit carries no relevance adds
          nothing (after a ReLU an inactive unit's conditional relevance is exactly 0), so for a
          ReLU layer either mean ranks genes as the mean over the cells where the unit is active.
          Why "served" by default: units of a trained classifier are often shared by several
          classes and read different genes for each (in the default PBMC model the unit with the
          largest B-cell share also serves two T-cell classes); the all-cell mean mixes them, while
          the served mean describes what the unit reads for the classes it is listed with. For one
          class only, pass only its cells (and ``target=`` that class).
        - ``low_genes``: the top genes whose mean input over the cells they were ranked on is
          negative. With z-scored inputs, relevance is ``x * gradient`` relative to the average
          cell, so a gene can be relevant for a class by being *low* there (in the default PBMC
          model, B-cell genes such as CD79B rank high for units serving CD34+ cells, where they are
          below average): this column keeps that from reading as "the unit detects CD79B".
        - ``reference_cells``: the ``examples`` cells with the largest ``R[i, u]`` (CRP's relevance
          maximization), by sample name.
    """
    for label, value, low in (
        ("top_genes", top_genes, 0),
        ("batch_size", batch_size, 1),
        ("examples", examples, 0),
        ("max_classes", max_classes, 0),
    ):
        if int(value) < low:
            raise ValueError(f"{label} must be >= {low}, got {value}")
    if genes_from not in ("served", "all"):
        raise ValueError(f"genes_from must be 'served' or 'all', got {genes_from!r}")
    if top_units is not None and int(top_units) < 1:
        raise ValueError(f"top_units must be >= 1 (or None for all), got {top_units}")
    model = explainer.model
    values, cells = explainer.align(data, missing=missing)
    if not cells:
        raise ValueError("the data has no cells")
    dtype = model_dtype(model) or torch.get_default_dtype()
    inputs = torch.as_tensor(values, dtype=dtype)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if layer is None:
        layer, at = default_layer(model, inputs[:1].to(device))
    targets = resolve_targets(target, len(cells), explainer.classes)

    # pass 1: every unit's relevance per cell (one forward and backward per batch)
    first = explain_concepts(model, inputs, layer, (), targets, explainer.composite, at=at, batch_size=batch_size)
    relevance = first.channel_relevance.detach().double().cpu()
    n_cells, n_units = relevance.shape
    explained = first.explained.detach().double().cpu()
    if first.target is not None:
        groups_index = first.target.cpu()
    else:
        with torch.no_grad(), eval_mode(model):
            groups_index = torch.cat(
                [model(inputs[s : s + batch_size].to(device)).argmax(1).cpu() for s in range(0, n_cells, batch_size)]
            )
    classes = explainer.classes or [str(i) for i in range(int(groups_index.max()) + 1)]

    chosen = list(range(n_units)) if units is None else [int(u) for u in units]
    bad = [u for u in chosen if not 0 <= u < n_units]
    if bad:
        raise ValueError(f"units {bad[:5]} are outside layer {layer!r}'s {n_units} units (0..{n_units - 1})")
    chosen = list(dict.fromkeys(chosen))
    total = relevance.sum(1)
    mean_total = float(total.mean())
    share = relevance.mean(0) / mean_total if mean_total != 0 else torch.full((n_units,), float("nan"))
    order = sorted(chosen, key=lambda u: -float(share[u]) if not np.isnan(float(share[u])) else np.inf)
    if top_units is not None:
        order = order[: int(top_units)]

    # the classes each unit serves, from its per-class shares
    rel = relevance[:, order].numpy()
    tot = total.numpy()
    index = groups_index.numpy()
    class_share = np.full((len(order), len(classes)), np.nan)
    for k in range(len(classes)):
        members = index == k
        denominator = tot[members].sum()
        if members.any() and denominator > 0:
            class_share[:, k] = rel[members].sum(0) / denominator
    served = [_served(class_share[j], max_classes) for j in range(len(order))]
    # (cells, units): 1 where the cell's class is one its unit serves
    in_served = torch.tensor(
        np.stack([np.isin(index, ks) for ks in served], 1) if order else np.zeros((n_cells, 0), dtype=bool),
        dtype=torch.float64,
    )

    # pass 2: conditional gene relevance of the chosen units, summed over cells chunk by chunk
    n_genes = len(explainer.genes)
    chunk = max(1, min(int(batch_size), ELEMENTS_PER_CHUNK // max(1, len(order) * n_genes)))
    sums = torch.zeros(len(order), n_genes, dtype=torch.float64)
    served_sums = torch.zeros(len(order), n_genes, dtype=torch.float64)
    chunk_targets = first.target.cpu() if first.target is not None else targets
    for start in range(0, n_cells if order else 0, chunk):
        part = chunk_targets[start : start + chunk] if isinstance(chunk_targets, torch.Tensor) else chunk_targets
        concepts = explain_concepts(
            model, inputs[start : start + chunk], layer, order, part, explainer.composite, at=at, batch_size=None
        )
        conditional = concepts.conditional
        if not isinstance(conditional, torch.Tensor) or conditional.shape[2:] != (n_genes,):
            raise ValueError(
                f"conditional relevance of shape {tuple(getattr(conditional, 'shape', ()))}; expected "
                f"(cells, units, {n_genes}) for a model reading (cells, genes)"
            )
        conditional = conditional.detach().double().cpu()
        sums += conditional.sum(0)
        served_sums += torch.einsum("bu,bug->ug", in_served[start : start + chunk], conditional)
    gene_relevance = sums / n_cells
    counts = in_served.sum(0)
    served_relevance = torch.where(counts[:, None] > 0, served_sums / counts.clamp(min=1)[:, None], gene_relevance)
    ranking = served_relevance if genes_from == "served" else gene_relevance
    # the mean input of each gene over the same cells: below zero, its relevance comes from low values
    values64 = torch.as_tensor(values, dtype=torch.float64)
    all_input = values64.mean(0).expand(len(order), n_genes)
    served_input = torch.where(counts[:, None] > 0, in_served.T @ values64 / counts.clamp(min=1)[:, None], all_input)
    mean_input = served_input if genes_from == "served" else all_input

    names = np.asarray(cells, dtype=object)
    rows = []
    for j, unit in enumerate(order):
        genes = torch.argsort(-ranking[j], stable=True)[:top_genes].tolist()
        references = np.argsort(-rel[:, j], kind="stable")[: min(examples, n_cells)]
        rows.append(
            {
                "unit": unit,
                "share": float(share[unit]),
                "classes": ", ".join(classes[k] for k in served[j]),
                "top_genes": ", ".join(explainer.genes[g] for g in genes),
                "low_genes": ", ".join(explainer.genes[g] for g in genes if mean_input[j, g] < 0),
                "reference_cells": ", ".join(str(c) for c in names[references]),
            }
        )
    frame = pd.DataFrame(rows, columns=["unit", "share", "classes", "top_genes", "low_genes", "reference_cells"])
    return UnitTable(
        layer=layer,
        at=at,
        frame=frame,
        channel_relevance=pd.DataFrame(rel, index=cells, columns=order),
        gene_relevance=pd.DataFrame(gene_relevance.numpy(), index=order, columns=explainer.genes),
        served_gene_relevance=pd.DataFrame(served_relevance.numpy(), index=order, columns=explainer.genes),
        class_share=pd.DataFrame(class_share, index=order, columns=classes),
        groups=pd.Series([classes[k] for k in index.tolist()], index=cells, name="class"),
        explained=pd.Series(explained.numpy(), index=cells, name="explained"),
        total=pd.Series(tot, index=cells, name="total"),
        genes_from=genes_from,
    )


def _served(shares: np.ndarray, limit: int) -> list[int]:
    """Class indices with a positive share of at least half the largest, largest first, at most ``limit``."""
    finite = np.isfinite(shares)
    if not finite.any() or np.nanmax(shares) <= 0:
        return []
    best = float(np.nanmax(shares))
    ranked = np.argsort(-np.where(finite, shares, -np.inf), kind="stable")
    return [int(k) for k in ranked if finite[k] and shares[k] > 0 and shares[k] >= 0.5 * best][:limit]


def write_unit_table(table: UnitTable, path: str | Path) -> Path:
    """Write ``table.frame`` as a TSV, atomically (a temporary name beside ``path``, then renamed over
    it; a symlink at ``path`` is replaced, never written through). Returns the path."""
    from lrp_domains.files.writing import atomic_path

    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"{path}: the folder {path.parent} does not exist; create it first")
    with atomic_path(path) as temporary:
        table.frame.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    return path
