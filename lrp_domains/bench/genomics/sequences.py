"""``lrp-domains bench sequences``: attributions against planted-motif ground truth.

The default CNN and held-out synthetic sequences (``lrp_domains.bench.data.synthetic``: JASPAR motifs
planted in random DNA, Koo & Ploenzke 2021). For each positive test sequence, the position
scores of a method are compared with the ground truth (positions whose generating motif column
carries more than 0.1 bit): AUROC and AUPR per sequence, averaged. Position score = the relevance
of the observed base (signed; for saliency, the largest absolute gradient over the bases). Cost
= attribution seconds over gradient x input's, measured in the same run (one-pass methods:
median of interleaved repeats; integrated gradients and ISM: one timed run).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch

from lrp_domains.core.composite import Composite
from lrp_domains.core.composites import CONV, DENSE
from lrp_domains.core.rules import AlphaBeta, Epsilon, Gamma, ZBox, ZPlus

#: Composites measured; the README's choice for ``genomics`` comes from this table.
CANDIDATES: dict[str, Callable[[], Composite]] = {
    "zbox + gamma + epsilon (genomics)": lambda: Composite(
        {CONV: Gamma(0.25), DENSE: Epsilon()}, first=ZBox(0.0, 1.0), name="genomics"
    ),
    "zbox + z+ + epsilon": lambda: Composite({CONV: ZPlus(), DENSE: Epsilon()}, first=ZBox(0.0, 1.0)),
    "zbox + epsilon": lambda: Composite({CONV + (DENSE,): Epsilon()}, first=ZBox(0.0, 1.0)),
    "epsilon-plus": lambda: Composite({CONV: ZPlus(), DENSE: Epsilon()}),
    "alpha2beta1": lambda: Composite({CONV + (DENSE,): AlphaBeta(2, 1)}),
    "epsilon": lambda: Composite({CONV + (DENSE,): Epsilon()}),
}


def methods(model, onehot: torch.Tensor, target, batch_size: int = 128) -> dict[str, Callable[[], torch.Tensor]]:
    """One callable per method returning position scores ``(N, L)``."""
    from lrp_domains import evaluate as E
    from lrp_domains import explain

    def lrp(composite: Composite) -> torch.Tensor:
        return explain(model, onehot, target, composite, batch_size=batch_size).relevance.sum(1)

    found: dict[str, Callable[[], torch.Tensor]] = {
        name: (lambda factory=factory: lrp(factory())) for name, factory in CANDIDATES.items()
    }

    def gradient_x_input() -> torch.Tensor:
        return E.gradient_x_input(model, onehot, target, batch_size=batch_size).relevance.sum(1)

    def centered() -> torch.Tensor:
        grad = E.gradient(model, onehot, target, batch_size=batch_size).relevance
        return (onehot * (grad - grad.mean(1, keepdim=True))).sum(1)

    def saliency() -> torch.Tensor:
        return E.gradient(model, onehot, target, batch_size=batch_size).relevance.abs().amax(1)

    found.update(
        {
            "gradient x input": gradient_x_input,
            "gradient x input, centered": centered,
            "saliency": saliency,
            "integrated gradients": lambda: E.integrated_gradients(
                model, onehot, target, steps=32, batch_size=batch_size
            ).relevance.sum(1),
            "ism": lambda: E.ism(model, onehot, target, batch_size=batch_size).relevance.sum(1),
        }
    )
    return found


def run(n: int = 1000, include_ism: bool = True, threads: int | None = None, repeats: int = 10) -> list[dict]:
    """Rows: method, mean AUROC, mean AUPR, seconds, cost in gradients."""
    from lrp_domains.bench.data.cnn import benchmark_data
    from lrp_domains.bench.measure import interleaved_times
    from lrp_domains.bio.sequences.synthetic_cnn import load_default_sequence_model
    from lrp_domains.evaluate import aupr, auroc

    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    if threads:
        torch.set_num_threads(threads)
    model = load_default_sequence_model()
    data = benchmark_data("test", n=n)
    positive = data.labels == 1
    onehot = data.onehot[positive].to(next(model.parameters()).dtype)
    truth = data.truth[positive]
    target = 0 if model(onehot[:1]).shape[-1] == 1 else 1
    found = methods(model, onehot, target)
    if not include_ism:
        found.pop("ism")
    rows = []
    for name, fn in found.items():
        start = time.perf_counter()
        scores = fn().double()
        seconds = time.perf_counter() - start
        rows.append(
            {
                "method": name,
                "AUROC": float(auroc(scores, truth).nanmean()),
                "AUPR": float(aupr(scores, truth).nanmean()),
                "seconds": seconds,
                "sequences": len(onehot),
            }
        )
    # One-pass methods take a fraction of a second: time them again, interleaved, median of many.
    quick = {name: fn for name, fn in found.items() if name not in ("ism", "integrated gradients")}
    times = interleaved_times(quick, repeats=repeats)
    for row in rows:
        row["seconds"] = times.get(row["method"], row["seconds"])
    base = times["gradient x input"]
    for row in rows:
        row["cost"] = row["seconds"] / base
    return rows


def print_table(rows: list[dict]) -> None:
    """Print the rows (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"bench sequences: default CNN, {rows[0]['sequences']} positive synthetic test sequences, "
        f"{torch.get_num_threads()} threads"
    )
    for column in ("method", "AUROC", "AUPR", "seconds", "cost (gradients)"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        table.add_row(
            row["method"], f"{row['AUROC']:.3f}", f"{row['AUPR']:.3f}", f"{row['seconds']:.2f}", f"{row['cost']:.2f}x"
        )
    Console().print(table)
