"""``lrp-domains bench fixed-cost``: what a call costs besides its arithmetic, in measures a busy
machine does not move.

The model is ``bench adapter``'s residual CNN (25 modules: BatchNorms, residual blocks, a max
pool, two dense layers) at 2 channels and 10 bases, one example per call: its arithmetic is next
to nothing, so a call is its fixed cost (installing the rules, the per-module forwards, the
epsilon hooks, the merges, the bookkeeping), against a plain gradient of the same value.

- ``garbage``: per call, the objects a call leaves in reference cycles (freed only by the garbage
  collector, with what they hold) and the collector's time (``gc.callbacks``) over many calls;
- ``--calls N``: only runs ``N`` calls of one method inside ``itertools.starmap``, for counting
  their instructions with valgrind, which no other load moves::

      OMP_WAIT_POLICY=PASSIVE valgrind --tool=callgrind --collect-atstart=no \\
          --toggle-collect=starmap_next lrp-domains bench fixed-cost --calls 20 --method epsilon

  (``Collected`` is the instructions of the 20 calls; ``--method gradient`` for the gradient's).
"""

from __future__ import annotations

import gc
import itertools
import time
import warnings
from collections.abc import Callable

import torch

__all__ = ["METHODS", "calls", "garbage", "methods", "print_table"]

METHODS = ("gradient", "epsilon", "genomics")


def methods() -> dict[str, Callable[[], object]]:
    """One call of each method on the tiny residual CNN, one example."""
    from lrp_domains.bench.engine.adapter import residual_cnn
    from lrp_domains.bio.composites import genomics
    from lrp_domains.bio.sequences.onehot import one_hot
    from lrp_domains.core.composites import get
    from lrp_domains.core.engine.attribution import explain

    model = residual_cnn(channels=2)
    x = one_hot(["ACGTACGTAC"]).float()
    target = model(x).argmax(1)
    epsilon, genomic = get("epsilon"), genomics()

    def gradient() -> torch.Tensor:
        leaf = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(leaf).gather(1, target[:, None]).sum(), leaf)
        return leaf.detach() * grad

    return {
        "gradient": gradient,
        "epsilon": lambda: explain(model, x, target, epsilon),
        "genomics": lambda: explain(model, x, target, genomic),
    }


def calls(method: str, n: int) -> None:
    """``n`` calls of ``method`` inside ``itertools.starmap`` (after five to warm up), the region
    ``valgrind --toggle-collect=starmap_next`` counts."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if n < 1:
        raise ValueError(f"--calls must be at least 1, got {n}")
    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    call = methods()[method]
    for _ in range(5):
        call()
    list(itertools.starmap(call, [()] * n))


def garbage(n: int = 500) -> list[dict]:
    """Per method: objects left in reference cycles per call, and the garbage collector's
    collections and seconds per call over ``n`` calls."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    rows = []
    for name, call in methods().items():
        for _ in range(5):
            call()
        rows.append(dict(method=name, cyclic=_cyclic(call), **_collections(call, n)))
    return rows


def _cyclic(call: Callable[[], object], n: int = 3) -> float:
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(n):
            call()
        gc.collect()
        return len(gc.garbage) / n
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


def _collections(call: Callable[[], object], n: int) -> dict:
    gc.collect()
    spent = [0.0, 0]
    started = [0.0]

    def timer(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - started[0]
            spent[1] += 1

    gc.callbacks.append(timer)
    try:
        for _ in range(n):
            call()
    finally:
        gc.callbacks.remove(timer)
    return dict(collections=spent[1] / n, gc_ms=1000 * spent[0] / n)


def print_table(rows: list[dict]) -> None:
    """The rows as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="bench fixed-cost: residual CNN (2 channels, 10 bases), one example per call")
    for column in ("method", "objects left in cycles / call", "collections / call", "collector ms / call"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        table.add_row(row["method"], f"{row['cyclic']:.0f}", f"{row['collections']:.3f}", f"{row['gc_ms']:.3f}")
    Console().print(table)
