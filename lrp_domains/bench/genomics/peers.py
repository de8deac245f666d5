"""``lrp-domains bench peers``: Captum next to lrp-domains on the default sequence CNN.

Captum's LRP (its default rules), DeepLiftShap with 20 shuffled references per sequence and
integrated gradients, against our ``genomics`` composite and gradient x input: per-sequence
Pearson correlation of the relevance maps (observed bases, positive test sequences) with ours,
AUROC against the planted-motif ground truth, and seconds relative to gradient x input, in one
run. Captum is optional (``pip install captum`` or ``lrp-domains[peers]``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch


def captum_missing() -> str | None:
    """None when Captum imports, else what to install."""
    try:
        import captum  # noqa: F401
    except ImportError:
        return "Captum is not installed: pip install captum (or pip install 'lrp-domains[peers]')"
    return None


def _shuffled_references(onehot: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` position-shuffled copies of each sequence, ``(N * count, A, L)``."""
    generator = torch.Generator().manual_seed(seed)
    copies = []
    for sequence in onehot:
        for _ in range(count):
            copies.append(sequence[:, torch.randperm(sequence.shape[1], generator=generator)])
    return torch.stack(copies)


def run(n: int = 400, references: int = 20, seed: int = 0) -> list[dict]:
    """Rows: method, correlation with ours, AUROC, seconds, cost in gradients (or the error)."""
    import copy

    from captum.attr import LRP, DeepLiftShap, IntegratedGradients

    from lrp_domains import evaluate as E
    from lrp_domains import explain
    from lrp_domains.bench.data.cnn import benchmark_data
    from lrp_domains.bench.measure import interleaved_times, row_correlations
    from lrp_domains.bio.sequences.synthetic_cnn import load_default_sequence_model

    warnings.filterwarnings("ignore")
    model = load_default_sequence_model()
    data = benchmark_data("test", n=n)
    positive = data.labels == 1
    onehot, truth = data.onehot[positive], data.truth[positive]
    target = 0 if model(onehot[:1]).shape[-1] == 1 else 1

    def ours() -> torch.Tensor:
        import lrp_domains.bio  # noqa: F401  (registers genomics)

        return explain(model, onehot, target, "genomics", batch_size=128).relevance

    def gradient_x_input() -> torch.Tensor:
        return E.gradient_x_input(model, onehot, target, batch_size=128).relevance

    def captum_lrp() -> torch.Tensor:
        # Captum attaches rules to the modules it is given: hand it a copy, ours stays untouched.
        # It has no default rule for Conv1d, BatchNorm or pooling: epsilon, and identity for pooling.
        from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

        copied = copy.deepcopy(model)
        for module in copied.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.Linear, torch.nn.BatchNorm1d)):
                module.rule = EpsilonRule()
            elif isinstance(
                module, (torch.nn.MaxPool1d, torch.nn.AdaptiveMaxPool1d, torch.nn.AdaptiveAvgPool1d, torch.nn.Flatten)
            ):
                module.rule = IdentityRule()
        return LRP(copied).attribute(onehot.clone(), target=target).detach()

    def deep_lift_shap() -> torch.Tensor:
        explainer = DeepLiftShap(copy.deepcopy(model))
        parts = []
        for start in range(0, len(onehot), 32):
            batch = onehot[start : start + 32]
            baselines = _shuffled_references(batch, references, seed)
            # DeepLiftShap pairs every input with every baseline; one sequence at a time keeps
            # each sequence with its own shuffles.
            parts.extend(
                explainer.attribute(
                    sequence[None], baselines[i * references : (i + 1) * references], target=target
                ).detach()
                * sequence[None]
                for i, sequence in enumerate(batch)
            )
        return torch.cat(parts)

    def integrated_gradients() -> torch.Tensor:
        return IntegratedGradients(model).attribute(onehot, target=target, n_steps=32).detach()

    methods: dict[str, Callable[[], torch.Tensor]] = {
        "lrp-domains genomics": ours,
        "gradient x input": gradient_x_input,
        "captum LRP": captum_lrp,
        "captum DeepLiftShap (20 shuffles)": deep_lift_shap,
        "captum integrated gradients": integrated_gradients,
    }
    results, rows = {}, []
    for name, fn in methods.items():
        start = time.perf_counter()
        try:
            relevance = fn()
        except Exception as error:  # a peer that cannot handle this model: report, do not stop
            rows.append({"method": name, "error": f"{type(error).__name__}: {error}"[:160]})
            continue
        seconds = time.perf_counter() - start
        results[name] = relevance
        rows.append(
            {"method": name, "seconds": seconds, "AUROC": float(E.auroc((relevance * onehot).sum(1), truth).nanmean())}
        )
    # The one-pass methods take a fraction of a second: time them again, interleaved.
    quick = {
        name: methods[name] for name in ("lrp-domains genomics", "gradient x input", "captum LRP") if name in results
    }
    times = interleaved_times(quick, repeats=5)
    for row in rows:
        if row["method"] in times:
            row["seconds"] = times[row["method"]]
    reference = results["lrp-domains genomics"]
    base = times["gradient x input"]
    for row in rows:
        if "seconds" in row:
            row["correlation"] = float(row_correlations(results[row["method"]] * onehot, reference * onehot).mean())
            row["cost"] = row["seconds"] / base
    return rows


def print_table(rows: list[dict]) -> None:
    """Print the rows (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="bench peers: default sequence CNN, positive synthetic test sequences")
    for column in ("method", "corr. with ours", "AUROC", "seconds", "cost (gradients)"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        if "error" in row:
            table.add_row(row["method"], "-", "-", "-", row["error"])
        else:
            table.add_row(
                row["method"],
                f"{row['correlation']:.3f}",
                f"{row['AUROC']:.3f}",
                f"{row['seconds']:.2f}",
                f"{row['cost']:.1f}x",
            )
    Console().print(table)
