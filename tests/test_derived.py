"""Tensors made from parameters alone are made once per call of the engine, not once per batch
(:mod:`lrp_domains.core.derived`), and a layer's detached parameters are the same views from call
to call (:func:`lrp_domains.core.engine.scope.detached_parameters`): never stale, whatever changes
the parameters between calls (in place, through ``.data``, replaced, cast), and fewer operations
per call."""

from __future__ import annotations

import contextlib
import copy
import gc

import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.bench.measure import count_operations
from lrp_domains.core import derived as D
from lrp_domains.core.engine.scope import detached_parameters


@pytest.fixture
def keeping():
    with D.kept():
        yield
    assert D.kept_bytes() == 0  # forgotten when the call ends


def counted(make):
    calls = []

    def wrapped():
        calls.append(1)
        return make()

    return wrapped, calls


def test_kept_while_the_source_is_unchanged_and_made_again_when_it_changes(keeping):
    w = torch.randn(4, 3)
    make, calls = counted(lambda: w.clamp(min=0))
    first = D.derived("pos", (w,), make)
    assert D.derived("pos", (w,), make) is first and len(calls) == 1
    with torch.no_grad():
        w.mul_(-1)  # an optimizer step: the version counter moves
    again = D.derived("pos", (w,), make)
    assert len(calls) == 2 and torch.equal(again, w.clamp(min=0))
    other = w.clone()  # the same values, another tensor
    D.derived("pos", (other,), make)
    assert len(calls) == 3


def test_a_kept_result_changed_in_place_is_made_again(keeping):
    w = torch.randn(5)
    make, calls = counted(lambda: w.clamp(min=0))
    D.derived("pos", (w,), make).add_(1)
    assert torch.equal(D.derived("pos", (w,), make), w.clamp(min=0)) and len(calls) == 2


def test_freed_sources_take_their_tensors_with_them(keeping):
    w = torch.randn(100)
    D.derived("pos", (w,), lambda t=w: t.clamp(min=0))
    assert D.kept_bytes() == 400
    del w
    gc.collect()
    assert D.kept_bytes() == 0


def test_nothing_is_kept_while_autograd_records_through_a_source(keeping):
    w = torch.randn(3, requires_grad=True)
    make, calls = counted(lambda: w.clamp(min=0))
    result = D.derived("pos", (w,), make)
    assert result.grad_fn is not None
    D.derived("pos", (w,), make)
    assert len(calls) == 2 and D.kept_bytes() == 0
    with torch.no_grad():
        D.derived("pos", (w,), make)
        D.derived("pos", (w,), make)
    assert len(calls) == 3


def test_at_most_the_limit_is_kept(monkeypatch, keeping):
    monkeypatch.setattr(D, "LIMIT_BYTES", 1000)
    tensors = [torch.randn(100) for _ in range(5)]  # 400 bytes each
    for t in tensors:
        D.derived("pos", (t,), lambda t=t: t.clamp(min=0))
    assert D.kept_bytes() == 800  # the two most recent
    make, calls = counted(lambda: tensors[-1].clamp(min=0))
    D.derived("pos", (tensors[-1],), make)
    assert not calls  # still kept


def test_detached_parameters_are_the_same_views_until_the_parameters_change():
    layer = nn.Linear(3, 2)
    weight, bias = detached_parameters(layer)
    assert detached_parameters(layer)[0] is weight and detached_parameters(layer)[1] is bias
    assert not weight.requires_grad
    with torch.no_grad():
        layer.weight.add_(1)
    assert detached_parameters(layer)[0] is weight and torch.equal(weight, layer.weight)  # one storage
    layer.weight.data = torch.zeros(2, 3)
    assert torch.equal(detached_parameters(layer)[0], torch.zeros(2, 3))
    layer.weight = nn.Parameter(torch.ones(2, 3))
    assert torch.equal(detached_parameters(layer)[0], torch.ones(2, 3))
    layer.double()
    assert detached_parameters(layer)[0].dtype == torch.float64


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(4, 8, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv1d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    ).eval()


def _explain(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    composite = L.composites.get("epsilon-gamma-box", low=0.0, high=1.0)  # z-box, then gamma convolutions
    return L.explain(model, x, 0, composite, check_delta=False).relevance


def test_explanations_follow_every_change_of_the_weights():
    x = nn.functional.one_hot(torch.randint(4, (3, 20)), 4).permute(0, 2, 1).float()
    model = _net()
    first = _explain(model, x)
    assert torch.equal(_explain(model, x), first)  # kept tensors: the same numbers
    changes = [
        lambda m: m[2].weight.data.mul_(-1.5),  # through .data: no version counter moves
        lambda m: torch.no_grad()(m[0].weight.add_)(0.3),  # an optimizer step
        lambda m: setattr(m[4], "weight", nn.Parameter(torch.randn_like(m[4].weight))),
        lambda m: m[2].weight.data.copy_(torch.randn_like(m[2].weight)),
    ]
    for change in changes:
        change(model)
        fresh = copy.deepcopy(model)  # the same weights in tensors never seen before
        expected = _explain(fresh, x)
        assert torch.allclose(_explain(model, x), expected, rtol=0, atol=0), change


def test_nothing_is_kept_outside_a_call():
    w = torch.randn(4)
    make, calls = counted(lambda: w.clamp(min=0))
    D.derived("pos", (w,), make)
    D.derived("pos", (w,), make)
    assert len(calls) == 2 and D.kept_bytes() == 0


def test_each_batch_after_the_first_makes_no_weight_tensors_again(monkeypatch):
    x = nn.functional.one_hot(torch.randint(4, (4, 20)), 4).permute(0, 2, 1).float()
    model = _net()
    composite = L.composites.get("epsilon-gamma-box", low=0.0, high=1.0)

    def explain():
        return L.explain(model, x, 0, composite, batch_size=1, check_delta=False).relevance

    explain()
    kept, relevance = count_operations(explain), explain()
    monkeypatch.setattr(D, "kept", contextlib.nullcontext)  # nothing kept: every batch makes them again
    remade, again = count_operations(explain), explain()
    assert torch.equal(relevance, again)
    # per gamma layer (two) W + gamma W+, W + gamma W-, W+, b+ and their stacking, and the z-box
    # layer's W+ and stacking: at least 12 operations for each of the 3 batches after the first
    assert remade - kept >= 3 * 12


def test_merged_batchnorm_parameters_follow_edits_through_data_between_calls():
    """A Conv + BatchNorm model behind a module the direct paths do not take: its merged
    parameters were once kept between calls, and an edit through ``.data`` went unseen."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(4, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(), nn.Flatten(), nn.Linear(160, 2))
    with torch.no_grad():
        net[1].running_var.uniform_(0.5, 1.5)
        net[1].running_mean.normal_()

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x) * 1.0

    model = Scaled().eval()
    x = torch.randn(3, 4, 20)
    before = L.explain(model, x, 0, "epsilon", check_delta=False).relevance
    net[0].weight.data.mul_(-2.0)
    net[1].running_var.data.mul_(3.0)
    after = L.explain(model, x, 0, "epsilon", check_delta=False).relevance
    assert not torch.allclose(before, after)
    assert torch.equal(after, L.explain(copy.deepcopy(model), x, 0, "epsilon", check_delta=False).relevance)
