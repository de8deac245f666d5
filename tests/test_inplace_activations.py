"""In-place activations (``nn.ReLU(inplace=True)``) and rules that keep a layer's output for the
backward: the relevance is the one the same model gives with out-of-place activations, for every
layer rule, and the model keeps its in-place flags. The LRP-epsilon modification applies to the
path through its own layer only, also on a layer that hands back its input."""

from __future__ import annotations

import models as M
import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.core.composite import Composite
from lrp_domains.core.rules import Epsilon


def _cnn(inplace: bool) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(4, 8, 5, padding=2),
        nn.BatchNorm1d(8),
        nn.ReLU(inplace=inplace),
        nn.Conv1d(8, 8, 3, padding=1),
        nn.LeakyReLU(0.0, inplace=inplace),
        nn.Flatten(),
        nn.Linear(160, 2),
    )
    return M.randomize_batchnorm(model, torch.Generator().manual_seed(1)).eval()


@pytest.mark.parametrize(
    ("composite", "options"),
    [
        ("epsilon", {}),
        ("epsilon-plus", {}),
        ("epsilon-gamma", {}),
        ("alpha2beta1", {}),
        ("zplus", {}),
        ("epsilon-gamma-box", {"low": 0.0, "high": 1.0}),
    ],
)
def test_in_place_activations_give_the_relevance_of_out_of_place_ones(composite, options):
    """Before, every layer rule but epsilon failed here: autograd found the kept layer output
    overwritten by the ReLU ("modified by an inplace operation"), and epsilon failed as well."""
    x = M.one_hot_batch(3, 20, torch.Generator().manual_seed(2))
    expected = L.explain(_cnn(False), x, 0, L.composites.get(composite, **options), check_delta=False)
    model = _cnn(True)
    before = M.snapshot(model)
    got = L.explain(model, x, 0, L.composites.get(composite, **options), check_delta=False)
    torch.testing.assert_close(got.relevance, expected.relevance, rtol=0, atol=0)
    M.assert_unchanged(before, M.snapshot(model))
    assert model[2].inplace and model[4].inplace


class _Skip(nn.Module):
    """``inner(x) + x`` where ``inner`` is an identity-like module (given the epsilon rule)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.first, self.inner, self.last = nn.Linear(5, 5), inner, nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        return self.last(self.inner(h) + h)


class _Copy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


def test_epsilon_scales_only_the_path_through_its_layer_when_the_layer_returns_its_input():
    """nn.Identity hands back the very tensor it gets; the epsilon rule on it must scale the
    gradient through it alone, not the skip path's too: it must equal a module that returns a
    copy (hand reference: with epsilon large, the two paths get different scales)."""
    composite = Composite(rules={"inner": Epsilon(epsilon=3.0), nn.Linear: Epsilon(epsilon=1e-6)})
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    results = []
    for inner in (nn.Identity(), _Copy()):
        torch.manual_seed(0)
        results.append(L.explain(_Skip(inner).eval(), x, 0, composite, check_delta=False).relevance)
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)

    # by hand: h = W1 x + b1, y = W2 (h + h) + b2 with the epsilon scale on the inner path only
    torch.manual_seed(0)
    model = _Skip(nn.Identity()).eval()
    with torch.no_grad():
        h = model.first(x)
        g_out = torch.zeros(4, 2)
        g_out[:, 0] = 1.0
        y = model.last(2 * h)
        g_y = g_out * y / (y + 1e-6 * torch.where(y >= 0, 1.0, -1.0))
        g_sum = g_y @ model.last.weight
        g_h = g_sum + g_sum * h / (h + 3.0 * torch.where(h >= 0, 1.0, -1.0))
        g_h = g_h * h / (h + 1e-6 * torch.where(h >= 0, 1.0, -1.0))
        expected = x * (g_h @ model.first.weight)
    torch.testing.assert_close(results[0], expected, rtol=1e-4, atol=1e-6)
