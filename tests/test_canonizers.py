"""BatchNorm merging: outputs unchanged, rules see the merged layer, nothing left behind."""

import copy

import models as M
import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.core.canonizers import MergeBatchNorm


def _cnn2d():
    g = M.seeded(0)
    return M.randomize_batchnorm(M.cnn2d(), g).eval(), torch.randn(4, 3, 8, 8, generator=g)


@pytest.mark.parametrize("make", ["cnn1d", "cnn2d"])
def test_merged_outputs_equal_the_original(make):
    g = M.seeded(1)
    if make == "cnn1d":
        model, x = M.randomize_batchnorm(M.cnn1d(), g).eval(), M.one_hot_batch(4, 32, g)
    else:
        model, x = _cnn2d()
    expected = model(x)
    with L.composites.get("epsilon").context(model) as scope:
        assert sum(call.merged for call in scope.calls.values()) == 2
        (leaf,) = scope.track(x)
        merged = model(leaf)
    torch.testing.assert_close(merged, expected, rtol=1e-5, atol=1e-5)


def test_rules_apply_to_the_merged_layer():
    """Explaining with merging equals explaining a copy whose conv weights were merged by hand
    and whose BatchNorms were removed."""
    model, x = _cnn2d()
    by_hand = copy.deepcopy(model)
    with torch.no_grad():
        for i in (0, 4):
            weight, bias = MergeBatchNorm.merged_parameters(model[i], model[i + 1])
            by_hand[i].weight.copy_(weight)
            by_hand[i].bias.copy_(bias)
            by_hand[i + 1] = nn.Identity()
    for name in ("epsilon", "epsilon-plus", "zplus"):
        merged = L.explain(model, x, composite=name)
        expected = L.explain(by_hand, x, composite=name)
        torch.testing.assert_close(merged.relevance, expected.relevance, rtol=1e-4, atol=1e-6)


def test_parameters_are_never_modified():
    model, x = _cnn2d()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    with L.composites.get("epsilon").context(model) as scope:
        (leaf,) = scope.track(x)
        model(leaf)
        for k, v in model.state_dict().items():
            assert torch.equal(v, params[k]), k


def test_batchnorm_in_training_mode_is_not_merged():
    model, x = _cnn2d()
    model.train()
    with L.composites.get("epsilon").context(model) as scope:
        assert not any(call.merged for call in scope.calls.values())


def test_explicit_pairs_by_name():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(4, 5, 3, padding=1)
            self.norm = nn.BatchNorm1d(5)
            self.head = nn.Linear(5, 2)

        def forward(self, x):
            return self.head(torch.relu(self.norm(self.conv(x))).mean(-1))

    g = M.seeded(2)
    net = M.randomize_batchnorm(Net(), g).eval()
    x = M.one_hot_batch(3, 12, g)
    expected = net(x)
    composite = L.Composite({nn.Conv1d: L.rules.ZPlus()}, canonizers=[MergeBatchNorm(pairs=[("conv", "norm")])])
    with composite.context(net) as scope:
        assert scope.calls[id(net.conv)].merged
        (leaf,) = scope.track(x)
        torch.testing.assert_close(net(leaf), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot merge"):
        with L.Composite({}, canonizers=[MergeBatchNorm(pairs=[("head", "norm")])]).context(net):
            pass
    assert "forward" not in net.conv.__dict__


@pytest.mark.parametrize("layer_bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_merged_parameters_are_the_textbook_formula(kind, affine, layer_bias):
    """W' = W gamma / sqrt(var + eps), b' = (b - mean) gamma / sqrt(var + eps) + beta (Montavon et
    al. 2019, Sec. 10.3), each computed here from the definitions in float64; and the merged layer
    computes norm(layer(x))."""
    g = M.seeded(3)
    layer = (nn.Linear(5, 4, bias=layer_bias) if kind == "linear" else nn.Conv1d(3, 4, 3, bias=layer_bias)).double()
    norm = M.randomize_batchnorm(nn.BatchNorm1d(4, affine=affine, eps=0.01).double(), g).eval()
    weight, bias = MergeBatchNorm.merged_parameters(layer, norm)
    gamma = norm.weight.detach() if affine else torch.ones(4, dtype=torch.float64)
    beta = norm.bias.detach() if affine else torch.zeros(4, dtype=torch.float64)
    factor = gamma / torch.sqrt(norm.running_var + norm.eps)
    b = layer.bias.detach() if layer_bias else torch.zeros(4, dtype=torch.float64)
    shape = (4,) + (1,) * (layer.weight.dim() - 1)
    torch.testing.assert_close(weight, layer.weight.detach() * factor.reshape(shape), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bias, (b - norm.running_mean) * factor + beta, rtol=1e-12, atol=1e-14)
    x = (
        torch.randn(2, 5, dtype=torch.float64, generator=g)
        if kind == "linear"
        else torch.randn(2, 3, 7, dtype=torch.float64, generator=g)
    )
    forward = nn.functional.linear if kind == "linear" else nn.functional.conv1d
    torch.testing.assert_close(forward(x, weight, bias), norm(layer(x)).detach(), rtol=1e-10, atol=1e-12)


def test_a_norm_in_another_dtype_merges_into_the_layer_dtype():
    """A float32 BatchNorm after a float64 layer: merged parameters in the layer's dtype."""
    M.seeded(4)
    layer, norm = nn.Linear(3, 2).double(), nn.BatchNorm1d(2).eval()
    weight, bias = MergeBatchNorm.merged_parameters(layer, norm)
    assert weight.dtype == bias.dtype == torch.float64
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(nn.functional.linear(x, weight, bias), norm(layer(x).float()).double().detach())


def test_children_are_those_of_nn_module():
    """The canonizer's own child walk: each child once, in order, None skipped (as ``children()``)."""
    from lrp_domains.core.canonizers import _children

    shared = nn.Conv1d(2, 2, 1)
    model = nn.Sequential(shared, nn.BatchNorm1d(2), shared, nn.ReLU())
    model.register_module("nothing", None)
    assert _children(model) == list(model.children())
    assert len(_children(model)) == 3
