"""Conservation: on bias-free ReLU networks the relevance sums to the explained output."""

import models as M
import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains import rules as R
from lrp_domains.core.composites import CONV, DENSE

NETS = {
    "mlp": lambda: (M.mlp(10, 16, 3, bias=False), lambda g: torch.randn(6, 10, generator=g, dtype=torch.float64)),
    "cnn1d": lambda: (M.cnn1d(batchnorm=False, bias=False), lambda g: M.one_hot_batch(6, 32, g).double()),
    "residual": lambda: (M.ResidualNet(bias=False), lambda g: M.one_hot_batch(6, 16, g).double()),
    "shared": lambda: (M.SharedLayerNet(bias=False), lambda g: torch.randn(6, 6, generator=g, dtype=torch.float64)),
}


@pytest.mark.parametrize("net", sorted(NETS))
def test_epsilon_to_zero_conserves(net):
    g = M.seeded(1)
    model, make_input = NETS[net]()
    model = model.double().eval()
    x = make_input(g)
    composite = L.Composite({(DENSE,) + CONV: R.Epsilon(1e-12), nn.AdaptiveAvgPool1d: R.Epsilon(1e-12)})
    result = L.explain(model, x, composite=composite)
    relative = result.delta.abs() / result.explained.abs()
    assert bool((relative < 1e-6).all()), relative


# Alpha-beta is left out: it conserves only where both the positive and the negative part of
# a neuron are non-zero (Bach et al. 2015), which random one-hot inputs often violate.
POSITIVE = {
    "zplus": lambda: {(DENSE,) + CONV: R.ZPlus(1e-12)},
    "gamma": lambda: {CONV: R.Gamma(0.5, 1e-12), DENSE: R.Epsilon(1e-12)},
}


@pytest.mark.parametrize("name", sorted(POSITIVE))
def test_positive_rules_conserve_on_bias_free_relu_cnn(name):
    g = M.seeded(2)
    model = M.cnn1d(batchnorm=False, bias=False).double().eval()
    x = M.one_hot_batch(6, 32, g).double()
    composite = L.Composite({**POSITIVE[name](), nn.AdaptiveAvgPool1d: R.Epsilon(1e-12)})
    result = L.explain(model, x, target=lambda out: out.abs().max(1).values, composite=composite)
    relative = result.delta.abs() / result.explained.abs()
    assert bool((relative < 1e-6).all()), relative


def test_biases_absorb_relevance_and_delta_reports_it():
    g = M.seeded(3)
    model = M.mlp(10, 16, 3, bias=True).double().eval()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                layer.bias.fill_(0.5)
    x = torch.randn(4, 10, generator=g, dtype=torch.float64)
    result = L.explain(model, x, composite=L.Composite({DENSE: R.Epsilon(1e-12)}))
    torch.testing.assert_close(result.delta, result.explained - result.relevance.sum(1))
    assert bool((result.delta.abs() > 1e-3).all())
