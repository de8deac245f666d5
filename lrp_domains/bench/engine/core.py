"""``lrp-domains bench core``: LRP cost relative to gradient x input, in one run.

Cases: (a) a 3-layer 1-D CNN with BatchNorm on one-hot inputs (N=64, 4 x 1000) with ``epsilon``
and ``epsilon-gamma-box``; (b) an MLP (N=256, 765 -> 256 -> 128 -> 10) with ``epsilon`` and
``zplus``; (c) the same MLP held as ``self.net`` in a module: the direct path, checked per call
(``epsilon``), and the general engine (``epsilon (general engine)``, run in strict mode, which
takes it); (d) ``bench adapter``'s residual CNN (BatchNorm, residual adds;
N=128 x 4 x 200), ``epsilon``. Each case also runs ``epsilon + ledger`` (``explain(..., ledger=True)``): its cost over
the same explanation without the ledger is the ``ledger`` column. Time ratios come from
interleaved runs; peak-memory ratios from fresh processes. Each composite's lower bound (the
multiply-accumulates its rules must compute, over a gradient's; :mod:`lrp_domains.bench.flops`)
is printed beside its time ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable

import torch
from torch import nn

from lrp_domains.bench.flops import lower_bound
from lrp_domains.bench.measure import interleaved_times, peak_bytes, peak_bytes_here
from lrp_domains.core.composites import get
from lrp_domains.core.engine.attribution import explain

CASES = {
    "cnn": ("3 conv + BatchNorm, one-hot N=64 x 4 x 1000", ["epsilon", "epsilon-gamma-box", "epsilon + ledger"]),
    "mlp": ("765-256-128-10, standard-normal N=256", ["epsilon", "zplus", "epsilon + ledger"]),
    "mlp-module": (
        "the same MLP held as self.net in a module (direct path checked per call; and the general engine), N=256",
        ["epsilon", "epsilon (general engine)"],
    ),
    "residual": ("bench adapter's residual CNN (BatchNorm, residual adds), one-hot N=128 x 4 x 200", ["epsilon"]),
}
LEDGER = " + ledger"
#: A method run by the general engine (strict mode takes it) where a direct path would be taken.
GENERAL = " (general engine)"


def build_case(case: str, device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    """The model (eval mode, random weights, BatchNorm statistics set) and its input batch."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if case == "cnn":
        model = nn.Sequential(
            nn.Conv1d(4, 64, 19, padding=9),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.MaxPool1d(4),
            nn.Conv1d(64, 64, 9, padding=4),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.MaxPool1d(4),
            nn.Conv1d(64, 64, 5, padding=2),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.Linear(64, 2),
        )
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
        idx = torch.randint(4, (64, 1000), generator=generator)
        inputs = nn.functional.one_hot(idx, 4).permute(0, 2, 1).float()
    elif case == "mlp":
        model = nn.Sequential(nn.Linear(765, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
        inputs = torch.randn(256, 765, generator=generator)
    elif case == "mlp-module":
        from lrp_domains.bench.engine.batch_one import MLPInModule

        model = MLPInModule()
        inputs = torch.randn(256, 765, generator=generator)
    elif case == "residual":
        from lrp_domains.bench.engine.adapter import residual_cnn

        model = residual_cnn()
        idx = torch.randint(4, (128, 200), generator=generator)
        inputs = nn.functional.one_hot(idx, 4).permute(0, 2, 1).float()
    else:
        raise ValueError(f"unknown case {case!r}")
    return model.eval().to(device), inputs.to(device)


def methods_for(case: str, model: nn.Module, inputs: torch.Tensor) -> dict[str, Callable[[], object]]:
    """``gradient x input`` and one callable per composite of the case."""
    target = model(inputs).argmax(1).detach()

    def gradient_x_input() -> torch.Tensor:
        x = inputs.detach().requires_grad_(True)
        out = model(x).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(out, x)
        return x.detach() * grad

    methods: dict[str, Callable[[], object]] = {"gradient x input": gradient_x_input}
    for name in CASES[case][1]:
        composite, ledger, strict = _composite(name), name.endswith(LEDGER), name.endswith(GENERAL)
        methods[name] = lambda composite=composite, ledger=ledger, strict=strict: explain(
            model, inputs, target, composite, ledger=ledger, strict=strict
        )
    return methods


def _composite(name: str):
    name = name.removesuffix(LEDGER).removesuffix(GENERAL)
    return get(name, low=0.0, high=1.0) if name == "epsilon-gamma-box" else get(name)


def run(device: str = "cpu", repeats: int = 10, memory: bool = True, threads: int | None = None) -> list[dict]:
    """Measure every case; return rows (case, method, seconds, time ratio, memory ratio)."""
    if threads:
        torch.set_num_threads(threads)
    # Random weights: biases absorb much of the relevance; that is not what is measured here.
    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    dev = torch.device(device)
    rows = []
    for case in CASES:
        model, inputs = build_case(case, dev)
        methods = methods_for(case, model, inputs)
        times = interleaved_times(methods, repeats=repeats)
        peaks = {}
        if memory:
            for method in methods:
                if dev.type == "cuda":
                    peaks[method] = peak_bytes_here(methods[method], dev)
                else:
                    peaks[method] = min(peak_bytes(__name__, case, method, device, threads) for _ in range(2))
        base_time, base_peak = times["gradient x input"], peaks.get("gradient x input")
        for method in methods:
            bound = 1.0 if method == "gradient x input" else lower_bound(model, inputs, _composite(method))
            same = method.removesuffix(LEDGER)
            rows.append(
                {
                    "case": case,
                    "method": method,
                    "ms": 1000 * times[method],
                    "time_ratio": times[method] / base_time,
                    "vs_without_ledger": times[method] / times[same] if method != same else float("nan"),
                    "bound": bound,
                    "peak_mb": peaks[method] / 2**20 if memory else float("nan"),
                    "memory_ratio": peaks[method] / base_peak if memory and base_peak else float("nan"),
                }
            )
    return rows


def print_table(rows: list[dict], device: str) -> None:
    """Print the rows as a table (rich), with the cases spelled out below it."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench core: {device}, {torch.get_num_threads()} threads; ratios = method / gradient x input")
    for column in ("case", "method", "ms", "time", "MAC bound", "time / bound", "peak MB", "memory", "ledger"):
        table.add_column(column, justify="left" if column in ("case", "method") else "right")
    for row in rows:
        measured = row["peak_mb"] == row["peak_mb"]  # not NaN
        table.add_row(
            row["case"],
            row["method"],
            f"{row['ms']:.1f}",
            f"{row['time_ratio']:.2f}x",
            f"{row['bound']:.2f}x",
            f"{row['time_ratio'] / row['bound']:.2f}",
            f"{row['peak_mb']:.1f}" if measured else "-",
            f"{row['memory_ratio']:.2f}x" if measured else "-",
            f"{row['vs_without_ledger']:.2f}x" if row["vs_without_ledger"] == row["vs_without_ledger"] else "",
        )
    console = Console()
    if not console.is_terminal:  # piped or redirected: whole method names rather than 80 columns
        console = Console(width=120)
    console.print(table)
    for case, (label, _) in CASES.items():
        console.print(f"  {case}: {label}")
    console.print("  ledger: time of '+ ledger' over the same composite without it (target: at most 1.10x)")


def _probe(case: str, method: str, device: str, threads: str) -> None:
    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    if int(threads):
        torch.set_num_threads(int(threads))
    dev = torch.device(device)
    model, inputs = build_case(case, dev)
    fn = methods_for(case, model, inputs)[method]
    print(json.dumps({"peak_bytes": peak_bytes_here(fn, dev)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--peak", nargs=4, metavar=("CASE", "METHOD", "DEVICE", "THREADS"))
    args = parser.parse_args()
    if args.peak:
        _probe(*args.peak)
    else:
        print_table(run(), "cpu")
        sys.exit(0)
