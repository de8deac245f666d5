"""The scope's lean path for leaf modules whose rule passes the gradient through (activations,
poolings, reshapes, merged BatchNorms) gives what the general per-module path gives, bit for bit,
and steps aside where the general path has work to do (a ledger, sources, an input-layer rule)."""

from __future__ import annotations

import warnings

import pytest
import torch
from models import one_hot_batch, seeded
from torch import nn

import lrp_domains as L
from lrp_domains.bench.engine.adapter import residual_cnn
from lrp_domains.core.engine import attribution
from lrp_domains.core.engine import scope as scope_module


def _explain(monkeypatch: pytest.MonkeyPatch, lean: bool, model: nn.Module, x: torch.Tensor, **options):
    """The explanation and how many module calls took the lean path."""
    # the scope's own paths are what is compared: the traced graph plan (tests/test_graph_plan.py) stays out
    monkeypatch.setattr(attribution, "graph_plan_for", lambda *args: None)
    if not lean:
        monkeypatch.setattr(scope_module, "_passes_through", lambda rule: False)
    taken = []
    original = scope_module.Scope._run_leaf

    def counted(self, *args):
        taken.append(1)
        return original(self, *args)

    monkeypatch.setattr(scope_module.Scope, "_run_leaf", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = L.explain(model, x, **options)
    monkeypatch.undo()
    return result, len(taken)


@pytest.mark.parametrize("composite", ["epsilon", "epsilon-gamma", "epsilon-plus", "alpha2beta1"])
def test_the_same_relevance_as_the_general_path(monkeypatch, composite):
    model = residual_cnn(channels=8)
    x = one_hot_batch(3, 40, seeded(3)).float()
    general, none_taken = _explain(monkeypatch, False, model, x, composite=composite)
    lean, taken = _explain(monkeypatch, True, model, x, composite=composite)
    assert none_taken == 0
    # per forward: 7 ReLUs, the max pool, the flatten, and the 5 merged BatchNorms
    assert taken == 14
    assert torch.equal(lean.relevance, general.relevance)
    assert torch.equal(lean.delta, general.delta)


def test_in_place_activations_keep_their_copy(monkeypatch):
    """``nn.ReLU(inplace=True)`` after a layer whose rule keeps its output (z+): the same relevance
    through the lean path, which copies the input as the general path does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 6, 5), nn.ReLU(inplace=True), nn.Conv1d(6, 2, 3), nn.Flatten()).eval()
    x = one_hot_batch(2, 20, seeded(4)).float()
    general, _ = _explain(monkeypatch, False, model, x, composite="epsilon-plus", target=0)
    lean, taken = _explain(monkeypatch, True, model, x, composite="epsilon-plus", target=0)
    assert taken > 0
    assert torch.equal(lean.relevance, general.relevance)


@pytest.mark.parametrize("options", [dict(ledger=True), dict(sources=["2"])], ids=["ledger", "sources"])
def test_hands_over_to_the_general_path_for_a_ledger_or_sources(monkeypatch, options):
    model = residual_cnn(channels=4)
    x = one_hot_batch(2, 30, seeded(5)).float()
    general, _ = _explain(monkeypatch, False, model, x, **options)
    lean, _ = _explain(monkeypatch, True, model, x, **options)
    assert torch.equal(lean.relevance, general.relevance)
    assert lean.sources.keys() == general.sources.keys()
    for name in general.sources:
        assert torch.equal(lean.sources[name], general.sources[name])


@pytest.mark.parametrize("composite", ["epsilon-gamma-box", "genomics"])
def test_with_an_input_layer_rule(monkeypatch, composite):
    """The input layer's rule is claimed by an affine layer in the general path; the activations,
    poolings and merged norms around it still take the lean path, with the same relevance."""
    from lrp_domains.bio import composites as bio_composites

    model = residual_cnn(channels=4)
    x = one_hot_batch(2, 30, seeded(5)).float()
    made = bio_composites.genomics() if composite == "genomics" else L.composites.get(composite, low=0.0, high=1.0)
    general, _ = _explain(monkeypatch, False, model, x, composite=made)
    lean, taken = _explain(monkeypatch, True, model, x, composite=made)
    assert taken == 14
    assert torch.equal(lean.relevance, general.relevance)


class _Named(nn.Module):
    """A module whose forward takes keywords named like the scope's own arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, call: float = 1.0, rule: float = 1.0, is_root: float = 1.0) -> torch.Tensor:
        return self.linear(x) * call * rule * is_root


def test_a_forward_may_take_keywords_named_like_the_scopes_arguments():
    model = _Named().eval()
    x = torch.randn(4, 3, generator=seeded(6))
    result = L.explain(model, x, target=0, composite="epsilon")
    with L.composites.get("epsilon").context(model):
        assert torch.equal(model(x, call=2.0, rule=3.0, is_root=0.5), model.linear(x) * 3.0)
    weight, bias = model.linear.weight[0], model.linear.bias[0]
    z = x @ weight + bias
    expected = x * weight * (z.abs() / (z.abs() + 1e-6))[:, None]  # LRP-epsilon by hand, one layer
    assert torch.allclose(result.relevance, expected.detach(), atol=1e-6)
