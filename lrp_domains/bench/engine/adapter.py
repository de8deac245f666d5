"""``lrp-domains bench adapter``: what the sequence adapter costs on top of the engine.

A residual 1-D CNN (stem conv + BatchNorm, two residual blocks of two convs with BatchNorm, a head
conv, global max pooling, two dense layers) on one-hot DNA ``(N, 4, 200)``. Timed in turns, in one
run, for each composite: gradient x input (the unit), the engine alone (``lrp_domains.explain``),
the engine with hypothetical contributions (what the adapter asks of it), and
``SequenceExplainer.explain`` from a one-hot tensor and from strings, plus its ``center`` and
``rc_average`` options. The adapter's overhead is its time over the engine-with-hypothetical time
(the same passes, batch size and outputs); the README quotes it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["residual_cnn", "run", "print_table"]


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 5, padding=2)
        self.norm1 = nn.BatchNorm1d(channels)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv1d(channels, channels, 5, padding=2)
        self.norm2 = nn.BatchNorm1d(channels)
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(x + self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x))))))


def residual_cnn(channels: int = 64, seed: int = 0) -> nn.Module:
    """The benchmark's residual 1-D CNN (random weights, eval mode)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv1d(4, channels, 11, padding=5),
        nn.BatchNorm1d(channels),
        nn.ReLU(),
        _Residual(channels),
        _Residual(channels),
        nn.Conv1d(channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool1d(1),
        nn.Flatten(),
        nn.Linear(channels, channels),
        nn.ReLU(),
        nn.Linear(channels, 1),
    )
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def run(n: int = 500, batch_size: int = 64, repeats: int = 7, threads: int | None = None) -> list[dict]:
    """One row per composite and method: median seconds and the ratio to gradient x input."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _measure(n, batch_size, repeats)
    finally:
        torch.set_num_threads(previous)


def _measure(n: int, batch_size: int, repeats: int) -> list[dict]:
    import lrp_domains as L
    from lrp_domains.bench.data.synthetic import make_dataset
    from lrp_domains.bench.measure import interleaved_times
    from lrp_domains.bio import SequenceExplainer
    from lrp_domains.evaluate import gradient_x_input

    model = residual_cnn()
    data = make_dataset(n, seed=0)
    onehot = data.onehot.float()
    strings = list(data.sequences)
    rows = []
    for composite in ("epsilon", "genomics"):
        explainer = SequenceExplainer(model, composite=composite)
        methods = {
            "gradient x input": lambda: gradient_x_input(model, onehot, None, batch_size=batch_size),
            "engine": lambda e=explainer: L.explain(
                model, onehot, composite=e.composite, batch_size=batch_size, check_delta=False
            ),
            "engine + hypothetical": lambda e=explainer: L.explain(
                model, onehot, composite=e.composite, batch_size=batch_size, hypothetical=True, check_delta=False
            ),
            "adapter, one-hot input": lambda e=explainer: e.explain(onehot, batch_size=batch_size),
            "adapter, string input": lambda e=explainer: e.explain(strings, batch_size=batch_size),
            "adapter, center": lambda e=explainer: e.explain(onehot, batch_size=batch_size, center=True),
            "adapter, rc_average": lambda e=explainer: e.explain(onehot, batch_size=batch_size, rc_average=True),
        }
        times = interleaved_times(methods, repeats=repeats, warmup=1)
        unit = times["gradient x input"]
        for name, seconds in times.items():
            rows.append(
                {
                    "composite": composite,
                    "method": name,
                    "seconds": seconds,
                    "ratio": seconds / unit,
                    "over_engine": seconds / times["engine + hypothetical"] - 1.0,
                }
            )
    return rows


def print_table(rows: list[dict]) -> None:
    """The table the README quotes."""
    print("| composite | method | x gradient x input | over engine + hypothetical |")
    print("|---|---|---|---|")
    for row in rows:
        over = f"{row['over_engine']:+.1%}" if row["method"].startswith("adapter") else ""
        print(f"| {row['composite']} | {row['method']} | {row['ratio']:.2f} | {over} |")
