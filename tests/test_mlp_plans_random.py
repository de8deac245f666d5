"""The direct MLP paths (a bare ``nn.Sequential``, and one held as ``self.net`` in a module)
against the general engine on randomly built MLPs (issue #27).

Each MLP is drawn from a seeded grammar: depth, widths (one unit included), Linear layers with and
without a bias, ReLUs (in place or not), dropout, identities, a flatten in front of 3-D inputs;
each is explained by three composites drawn from the module rules that have a direct form
(epsilon, LRP-0, z+, alpha-beta, gamma, with z-box, flat or w-square on the input layer), at batch
sizes one to five, with a target, a contrast or the top class. The relevance, output, explained
value, delta and hypothetical contributions must equal what the general engine computes (strict
mode, the per-module scope) within float64 rounding: the direct paths evaluate the same rules
without autograd, so only the order of sums may differ."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.core.composite import Composite
from lrp_domains.core.engine.sequential import held_plan_for, plan_for
from lrp_domains.core.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus

COMPOSITES = {
    "epsilon": lambda: Composite({nn.Linear: Epsilon()}),
    "lrp-0": lambda: Composite({nn.Linear: Epsilon(0.0)}),
    "zplus, epsilon last": lambda: Composite({nn.Linear: ZPlus()}, last=Epsilon(0.01)),
    "alpha2beta1": lambda: Composite({nn.Linear: AlphaBeta(2, 1)}),
    "gamma": lambda: Composite({nn.Linear: Gamma(0.25)}),
    "zbox first, gamma, epsilon last": lambda: Composite(
        {nn.Linear: Gamma(0.5)}, first=ZBox(-3.0, 3.0), last=Epsilon()
    ),
    "flat first, epsilon": lambda: Composite({nn.Linear: Epsilon(0.1)}, first=Flat()),
    "w-square first, alpha1beta0": lambda: Composite({nn.Linear: AlphaBeta(1, 0)}, first=WSquare()),
}


def _mlp(rng: random.Random, n_in: int, n_out: int, flatten: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    width = n_in
    for _ in range(rng.randint(0, 3)):
        hidden = rng.choice((1, 5, 9))
        layers.append(nn.Linear(width, hidden, bias=rng.random() < 0.8))
        layers.append(nn.ReLU(inplace=rng.random() < 0.3))
        if rng.random() < 0.3:
            layers.append(rng.choice((nn.Dropout(0.5), nn.Identity())))
        width = hidden
    layers.append(nn.Linear(width, n_out, bias=rng.random() < 0.8))
    return nn.Sequential(*layers)


class Holds(nn.Module):
    """An MLP held as ``self.net`` (the shape most users write)."""

    def __init__(self, net: nn.Sequential) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _target(kind: str, n_out: int):
    if kind == "class":
        return n_out - 1
    if kind == "contrast" and n_out > 1:
        return lambda out: out[:, 0] - out[:, -1]
    return None


@pytest.mark.parametrize("held", [False, True], ids=["sequential", "held"])
@pytest.mark.parametrize("seed", range(16))
def test_random_mlps_take_the_direct_path_with_the_general_engines_relevance(seed, held):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    flatten = rng.random() < 0.25
    shape = (3, 4) if flatten else (rng.choice((1, 6, 12)),)
    n_in, n_out = (12 if flatten else shape[0]), rng.choice((1, 2, 4))
    net = _mlp(rng, n_in, n_out, flatten).double().eval()
    model = Holds(net).eval() if held else net
    batch = rng.randint(1, 5)
    x = torch.randn(batch, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    for name in rng.sample(sorted(COMPOSITES), 3):
        composite = COMPOSITES[name]()
        plan = held_plan_for(model, composite) if held else plan_for(model, composite)
        # an input-layer rule needs the input layer first: behind a flatten the general engine runs
        assert (plan is None) == (flatten and composite.first is not None), (name, net)
        target = _target(rng.choice(("class", "contrast", "top")), n_out)
        options = dict(hypothetical=True, check_delta=False, batch_size=rng.choice((2, 5)))
        fast = L.explain(model, x, target, composite, **options)
        general = L.explain(model, x, target, composite, strict=True, **options)
        for field in ("relevance", "output", "explained", "delta", "hypothetical"):
            torch.testing.assert_close(
                getattr(fast, field), getattr(general, field), rtol=1e-9, atol=1e-12, msg=f"{name}: {field}"
            )
