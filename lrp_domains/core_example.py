"""``lrp-domains demo``: until the text and bio demos land, a short core example.

A small MLP learns a rule that uses three of eight input features; LRP should put the relevance
on those three. Trains in about a second on a CPU and prints the relevance tables.
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_domains.core.engine.attribution import explain

FEATURES = [f"x{i}" for i in range(8)]
#: The label is sign(2 x0 - 1.5 x3 + x5): only these features matter.
WEIGHTS = {0: 2.0, 3: -1.5, 5: 1.0}


def make_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard-normal inputs and the binary label of the planted rule."""
    x = torch.randn(n, len(FEATURES), generator=generator)
    score = sum(w * x[:, i] for i, w in WEIGHTS.items())
    return x, (score > 0).long()


def train_model(steps: int = 300, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 8-32-32-2 ReLU MLP trained on the planted rule; returns it with held-out data."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    x, y = make_data(2048, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    test_x, test_y = make_data(512, generator)
    return model.eval(), test_x, test_y


def run_core_demo(progress: bool = True) -> None:
    """Train, explain with three composites, print per-feature and per-example tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.soft_wrap = not console.is_terminal  # piped: whole lines, never wrapped at 80 columns
    with console.status("training a small MLP on a planted rule", spinner="dots") if progress else _null():
        model, x, y = train_model()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    console.print(
        f"[bold]lrp-domains core demo[/bold]: label = sign(2 x0 - 1.5 x3 + x5); held-out accuracy {accuracy:.3f}"
    )

    composites = ("epsilon", "zplus", "alpha2beta1")
    results = {name: explain(model, x, composite=name, batch_size=128) for name in composites}
    table = Table(title="Share of mean |relevance| per feature, predicted class, 512 held-out examples")
    table.add_column("feature")
    table.add_column("in the rule", justify="right")
    for name in composites:
        table.add_column(name, justify="right")
    shares = {name: r.relevance.abs().mean(0) / r.relevance.abs().mean(0).sum() for name, r in results.items()}
    for i, feature in enumerate(FEATURES):
        weight = f"{WEIGHTS[i]:+.1f}" if i in WEIGHTS else ""
        table.add_row(feature, weight, *(f"{shares[name][i]:.0%}" for name in composites))
    table.add_row("x0+x3+x5", "", *(f"{shares[name][list(WEIGHTS)].sum():.0%}" for name in composites), style="bold")
    console.print(table)

    result = results["epsilon"]
    examples = Table(title="Three examples, epsilon rule: input value -> relevance")
    examples.add_column("feature")
    for i in range(3):
        examples.add_column(f"example {i} (class {result.target[i].item()})", justify="right")
    for j, feature in enumerate(FEATURES):
        examples.add_row(feature, *(f"{x[i, j]:+.2f} -> {result.relevance[i, j]:+6.2f}" for i in range(3)))
    examples.add_row("logit", *(f"{result.explained[i]:.2f}" for i in range(3)))
    examples.add_row("delta", *(f"{result.delta[i]:+.2f}" for i in range(3)))
    console.print(examples)
    console.print("delta = logit - summed relevance: what the biases absorbed.")


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False
