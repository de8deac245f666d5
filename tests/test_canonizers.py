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
