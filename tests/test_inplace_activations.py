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


def test_a_hook_on_a_layer_output_sees_the_gradient_before_the_epsilon_scale():
    """A user's tensor hook on a Linear's output (put there by a forward hook) gets the gradient at
    that output and its result is then scaled by the layer's epsilon rule: by hand in float64 with
    a hook that is not elementwise-commuting with the scale (2 g + 1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2)).double().eval()
    x = torch.randn(4, 5, dtype=torch.float64)

    def hook(_module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        out.register_hook(lambda g: 2 * g + 1)

    handle = model[0].register_forward_hook(hook)
    try:
        got = L.explain(model, x, 0, Composite(rules={nn.Linear: Epsilon(epsilon=0.5)}), check_delta=False)
    finally:
        handle.remove()

    def scale(z: torch.Tensor) -> torch.Tensor:
        return z / (z + 0.5 * torch.where(z >= 0, 1.0, -1.0))

    with torch.no_grad():
        z1 = model[0](x)
        z2 = model[1](z1)
        seed = torch.zeros_like(z2)
        seed[:, 0] = 1.0
        g_h = (seed * scale(z2)) @ model[1].weight
        g_x = ((2 * g_h + 1) * scale(z1)) @ model[0].weight
    torch.testing.assert_close(got.relevance, x * g_x, rtol=1e-10, atol=1e-12)


class _AddInPlace(nn.Module):
    """A residual add on a convolution's output: ``out = out + x``, ``out += x`` (as ResNets write
    it) or ``out.add_(x)``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.conv, self.how = nn.Conv1d(4, 4, 3, padding=1), how
        self.head = nn.Linear(4 * 20, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.how == "+=":
            out += x
        elif self.how == "add_":
            out.add_(x)
        else:
            out = out + x
        return self.head(torch.relu(out).flatten(1))


def _add_model(how: str) -> nn.Module:
    torch.manual_seed(0)
    return _AddInPlace(how).eval()


@pytest.mark.parametrize("how", ["+=", "add_"])
def test_an_add_in_place_on_a_layer_output_gives_the_relevance_of_an_add_under_epsilon(how):
    """``out += x`` (as ResNets write it) on a convolution's output: epsilon keeps nothing of the
    output, so the relevance is that of ``out = out + x``; before, epsilon failed here too."""
    x = M.one_hot_batch(3, 20, torch.Generator().manual_seed(4))
    expected = L.explain(_add_model("+"), x, 0, "epsilon", check_delta=False).relevance
    got = L.explain(_add_model(how), x, 0, "epsilon", check_delta=False).relevance
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("how", ["+=", "add_"])
def test_in_place_on_a_layer_output_a_rule_keeps_is_a_clear_error_and_the_model_is_unchanged(how):
    """gamma keeps the convolution's output for its backward: changing it in place is named, with
    what to do, instead of autograd's version-counter message."""
    x = M.one_hot_batch(3, 20, torch.Generator().manual_seed(4))
    model = _add_model(how)
    before = M.snapshot(model)
    with pytest.raises(RuntimeError, match=r"changed a layer's output in place .* out of place"):
        L.explain(model, x, 0, "epsilon-gamma", check_delta=False)
    M.assert_unchanged(before, M.snapshot(model))
