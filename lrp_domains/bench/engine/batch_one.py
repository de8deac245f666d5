"""``lrp-domains bench batch-one``: one example at a time, where fixed costs per module show.

A batch of one sequence or one sentence is where the engine's per-module Python work (installed
forwards, autograd Functions, bookkeeping) shows next to the arithmetic, as kernel launches do on
a GPU. For each model our explanation of one example is timed against a plain gradient of the same
value (gradient x input, at the one-hot input or the token embeddings), in turns, in one run; the
composite's lower bound (:mod:`lrp_domains.bench.flops`, its rules' multiply-accumulates over a
gradient's) is printed beside the ratio, and ``time / bound`` is the figure against the target
(at most 1.3). Beside it, the top-level ATen operations of one call of each (a dispatch on a
CPU, a kernel launch or more on a GPU): a count that a busy machine does not move.

- ``mlp-module``: the 765-256-128-10 ReLU MLP held as ``self.net`` in a module, ``epsilon``: the
  direct path (checked per call), and ``epsilon (general engine)``, the scope's cost (strict mode
  takes the general engine);
- ``residual-cnn``: ``bench adapter``'s residual 1-D CNN (BatchNorm, two residual blocks, max
  pool, two dense layers) on 4 x 200 one-hot, through ``SequenceExplainer``, ``epsilon`` and
  ``genomics``: by the traced graph plan (:mod:`lrp_domains.core.engine.graph_plan`), and by the
  general engine (``(general engine)``, the plan disabled);
- ``bpnet``: bpnet-lite's BPNet (64 filters, 8 dilated layers, 2,114 bp), its counts target,
  through ``SequenceExplainer``, ``genomics`` (needs the ``models`` extra);
- ``minilm``: the default sentiment model (MiniLM), one sentence, ``attnlrp`` (no MAC bound is
  computed for a transformer: the bound column is 1, the gradient's, which AttnLRP's rules keep).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lrp_domains.bench.measure import count_operations, interleaved_times

__all__ = ["CASES", "run", "print_table"]

CASES = ("mlp-module", "residual-cnn", "bpnet", "minilm")


class MLPInModule(nn.Module):
    """The bench core MLP as most users hold it: a Sequential inside a module."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(765, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _gradient_x_input(model: nn.Module, inputs: torch.Tensor, value: Callable[[torch.Tensor], torch.Tensor]):
    def gradient() -> torch.Tensor:
        x = inputs.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(value(model(x)).sum(), x)
        return x.detach() * grad

    return gradient


def _engine_case(name: str, batch: int, device: torch.device) -> list[dict[str, Any]]:
    from lrp_domains.bench.flops import lower_bound
    from lrp_domains.core.composites import get
    from lrp_domains.core.engine.attribution import explain

    torch.manual_seed(0)
    model = MLPInModule().eval().to(device)
    inputs = torch.randn(batch, 765).to(device)
    target = model(inputs).argmax(1)
    composite = get("epsilon")
    gradient = _gradient_x_input(model, inputs, lambda out: out.gather(1, target[:, None]))
    bound = lower_bound(model, inputs, composite)
    rows = []
    for method, strict in (("epsilon", False), ("epsilon (general engine)", True)):
        methods = {
            "gradient x input": gradient,
            method: lambda strict=strict: explain(model, inputs, target, composite, strict=strict),
        }
        rows.append(dict(case=name, method=method, bound=bound, methods=methods))
    return rows


def _sequence_case(name: str, batch: int, device: torch.device) -> list[dict[str, Any]]:
    from lrp_domains.bench.flops import lower_bound
    from lrp_domains.bio.sequences.explainer import SequenceExplainer
    from lrp_domains.bio.sequences.onehot import one_hot
    from lrp_domains.core.engine import graph_plan

    generator = torch.Generator().manual_seed(0)
    if name == "bpnet":
        from lrp_domains.bench.gpu.models import build

        model, options, length, _ = build("bpnet-counts", tiny=False)
        composites = ["genomics"]
    else:
        from lrp_domains.bench.engine.adapter import residual_cnn

        model, options, length = residual_cnn(), {}, 200
        composites = ["epsilon", "genomics"]
    model = model.to(device)
    sequences = [
        "".join("ACGT"[i] for i in row.tolist()) for row in torch.randint(4, (batch, length), generator=generator)
    ]
    rows = []
    for composite in composites:
        explainer = SequenceExplainer(model, composite=composite, **{k: v for k, v in options.items() if k != "target"})
        target = options.get("target")
        onehot = one_hot(sequences).float().to(device)
        if target is None:
            index = explainer.runner(onehot).argmax(1)

            def value(out: torch.Tensor, index: torch.Tensor = index) -> torch.Tensor:
                return out.gather(1, index[:, None])
        else:
            value = target

        def ours(explainer=explainer, target=target, onehot=onehot) -> object:
            return explainer.explain(onehot, target=target, batch_size=batch)

        def general(ours=ours) -> object:
            with graph_plan.disabled():
                return ours()

        bound = lower_bound(explainer.runner, onehot, explainer.composite)
        gradient = _gradient_x_input(explainer.runner, onehot, value)
        rows.append(
            dict(case=name, method=composite, bound=bound, methods={"gradient x input": gradient, composite: ours})
        )
        if name == "residual-cnn":  # the traced graph plan against the scope, in the same run
            method = f"{composite} (general engine)"
            rows.append(
                dict(case=name, method=method, bound=bound, methods={"gradient x input": gradient, method: general})
            )
    return rows


def _text_case(name: str, batch: int, device: torch.device) -> list[dict[str, Any]]:
    from lrp_domains.text import TextExplainer

    explainer = TextExplainer.default(composite="attnlrp", device=device)
    model, tokenizer = explainer.model, explainer.tokenizer
    sentences = ["A gorgeous, moving film that stays with you long after the credits roll."] * batch
    encoded = tokenizer(sentences, return_tensors="pt", padding=True).to(device)
    embed = model.get_input_embeddings()
    index = model(**encoded).logits.argmax(1)

    def gradient() -> torch.Tensor:
        embeddings = embed(encoded["input_ids"]).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeddings, attention_mask=encoded["attention_mask"]).logits
        (grad,) = torch.autograd.grad(logits.gather(1, index[:, None]).sum(), embeddings)
        return (embeddings.detach() * grad).sum(-1)

    methods = {"gradient x input": gradient, "attnlrp": lambda: explainer.explain(sentences, batch_size=batch)}
    return [dict(case=name, method="attnlrp", bound=1.0, methods=methods)]


def run(
    cases: tuple[str, ...] = CASES,
    batch: int = 1,
    repeats: int = 30,
    threads: int | None = None,
    device: str | torch.device = "cpu",
) -> list[dict]:
    """Time each case on ``device`` (a CUDA device: each call timed to its last kernel); return rows
    (case, method, ms of each, ratio, bound)."""
    device = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    builders = {"mlp-module": _engine_case, "residual-cnn": _sequence_case, "bpnet": _sequence_case}
    rows = []
    for case in cases:
        if case not in CASES:
            raise ValueError(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        specs = _text_case(case, batch, device) if case == "minilm" else builders[case](case, batch, device)
        for spec in specs:
            times = interleaved_times(spec["methods"], repeats=repeats, device=device)
            base, ours = times["gradient x input"], times[spec["method"]]
            operations = {name: count_operations(fn) for name, fn in spec["methods"].items()}
            rows.append(
                dict(
                    case=case,
                    method=spec["method"],
                    batch=batch,
                    device=_name(device),
                    gradient_ms=1000 * base,
                    ms=1000 * ours,
                    time_ratio=ours / base,
                    bound=spec["bound"],
                    gradient_operations=operations["gradient x input"],
                    operations=operations[spec["method"]],
                )
            )
    return rows


def _name(device: torch.device) -> str:
    """``cpu``, or the CUDA card's name (a GPU figure names its card)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return device.type


def print_table(rows: list[dict]) -> None:
    """The rows as a table, with the target beside it."""
    from rich.console import Console
    from rich.table import Table

    batch = rows[0]["batch"] if rows else 1
    device = rows[0]["device"] if rows else "cpu"
    where = f"{device}, {torch.get_num_threads()} threads" if device == "cpu" else device
    table = Table(title=f"bench batch-one: batch {batch}, {where}")
    columns = ("case", "method", "gradient ms", "ours ms", "time", "MAC bound", "time / bound", "aten ops")
    for column in columns:
        table.add_column(column, justify="left" if column in ("case", "method") else "right")
    for row in rows:
        table.add_row(
            row["case"],
            row["method"],
            f"{row['gradient_ms']:.2f}",
            f"{row['ms']:.2f}",
            f"{row['time_ratio']:.2f}x",
            f"{row['bound']:.2f}x",
            f"{row['time_ratio'] / row['bound']:.2f}",
            f"{row['operations']} / {row['gradient_operations']}",
        )
    console = Console()
    if not console.is_terminal:  # piped or redirected: whole method names rather than 80 columns
        console = Console(width=120)
    console.print(table)
    console.print("  time / bound: our time over the gradient's, over the composite's MAC bound (target: at most 1.3)")
    console.print(
        "  aten ops: top-level ATen operations of one call, ours / the gradient's (each a dispatch here, a kernel"
        " launch or more on a GPU; independent of the machine's load)"
    )
