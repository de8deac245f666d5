"""Every rule against the independent matrix-form reference (tests/reference.py), float64."""

import zlib

import pytest
import reference as ref
import torch
from torch import nn

import lrp_domains as L
from lrp_domains import rules as R

LAYERS = {
    "Linear": (lambda bias: nn.Linear(12, 7, bias=bias), (12,)),
    "Conv1d": (lambda bias: nn.Conv1d(3, 5, 4, padding=1, bias=bias), (3, 10)),
    "Conv2d": (lambda bias: nn.Conv2d(2, 3, 3, padding=1, stride=2, bias=bias), (2, 6, 5)),
}

# rule name -> (our rule, matrix reference taking (W, b, x, R, layer, shape), is an input-layer rule)
RULES = {
    "epsilon": (R.Epsilon(1e-6), lambda W, b, x, r, *_: ref.epsilon(W, b, x, r), False),
    "epsilon-large": (R.Epsilon(0.5), lambda W, b, x, r, *_: ref.epsilon(W, b, x, r, eps=0.5), False),
    "zplus": (R.ZPlus(), lambda W, b, x, r, *_: ref.zplus(W, b, x, r), False),
    "alphabeta": (R.AlphaBeta(2, 1), lambda W, b, x, r, *_: ref.alphabeta(W, b, x, r), False),
    "alpha1beta0": (R.AlphaBeta(1, 0), lambda W, b, x, r, *_: ref.alphabeta(W, b, x, r, 1.0, 0.0), False),
    "gamma": (R.Gamma(0.25), lambda W, b, x, r, *_: ref.gamma(W, b, x, r), False),
    "gamma-large": (R.Gamma(2.0), lambda W, b, x, r, *_: ref.gamma(W, b, x, r, g=2.0), False),
    "zbox": (R.ZBox(-2.5, 3.0), lambda W, b, x, r, *_: ref.zbox(W, b, x, r, -2.5, 3.0), True),
    "wsquare": (R.WSquare(), lambda W, b, x, r, *_: ref.wsquare(W, b, x, r), True),
    "flat": (R.Flat(), lambda W, b, x, r, layer, shape: ref.flat(ref.connectivity(layer, shape), x, r), True),
}

INPUTS = {
    "signed": lambda shape, g: torch.randn(5, *shape, generator=g, dtype=torch.float64),
    "nonnegative": lambda shape, g: torch.randn(5, *shape, generator=g, dtype=torch.float64).clamp(min=0),
}


def _composite(rule, first):
    if first:
        return L.Composite({}, first=rule)
    return L.Composite({(nn.Linear, nn.Conv1d, nn.Conv2d): rule})


def _reference(layer, shape, x, target, reference):
    W, b = ref.layer_as_matrix(layer, shape)
    out = []
    for xi, ti in zip(x, target):
        flat = xi.reshape(-1)
        z = W @ flat + (0 if b is None else b)
        relevance = torch.zeros_like(z)
        relevance[ti] = z[ti]
        out.append(reference(W, b, flat, relevance, layer, shape).reshape(xi.shape))
    return torch.stack(out)


@pytest.mark.parametrize("inputs", sorted(INPUTS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layer_name", sorted(LAYERS))
@pytest.mark.parametrize("rule_name", sorted(RULES))
def test_rule_matches_matrix_reference(rule_name, layer_name, bias, inputs):
    g = torch.Generator().manual_seed(zlib.crc32(f"{rule_name}{layer_name}{bias}{inputs}".encode()))
    make, shape = LAYERS[layer_name]
    layer = make(bias).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    model = nn.Sequential(layer, nn.Flatten())
    x = INPUTS[inputs](shape, g)
    rule, reference, first = RULES[rule_name]
    result = L.explain(model, x, composite=_composite(rule, first))
    expected = _reference(layer, shape, x, result.target, reference)
    torch.testing.assert_close(result.relevance, expected, rtol=1e-9, atol=1e-12)


def test_zbox_gives_relevance_to_zero_valued_one_hot_entries():
    """On one-hot input, z-box relevance of the zeros is -low W+^T s - high W-^T s: not zero."""
    g = torch.Generator().manual_seed(3)
    layer = nn.Conv1d(4, 6, 5, padding=2).double()
    model = nn.Sequential(layer, nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(6, 2).double())
    idx = torch.randint(4, (3, 20), generator=g)
    x = nn.functional.one_hot(idx, 4).permute(0, 2, 1).double()
    result = L.explain(model, x, composite=L.composites.get("epsilon-gamma-box", low=0.0, high=1.0))
    zeros = x == 0
    assert (result.relevance[zeros] != 0).float().mean() > 0.5
    # Same numbers as the matrix reference for the first layer, fed the relevance that
    # arrived at its output (read off by explaining the rest of the network from there).
    W, b = ref.layer_as_matrix(layer, (4, 20))
    with torch.no_grad():
        hidden = layer(x)
    rest = nn.Sequential(*list(model)[1:])
    upper = L.explain(rest, hidden, target=result.target, composite=L.composites.get("epsilon"))
    for i in range(len(x)):
        expected = ref.zbox(W, b, x[i].reshape(-1), upper.relevance[i].reshape(-1), 0.0, 1.0).reshape(4, 20)
        torch.testing.assert_close(result.relevance[i], expected, rtol=1e-9, atol=1e-12)
    # Plain x * gradient is zero wherever x is zero.
    plain = L.explain(model, x, composite=L.composites.get("epsilon"))
    assert bool((plain.relevance[zeros] == 0).all())


def test_alphabeta_rejects_non_conserving_parameters():
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        R.AlphaBeta(2.0, 2.0)
    with pytest.raises(ValueError, match=">= 0"):
        R.AlphaBeta(-1.0, -2.0)


def test_hypothetical_contributions_on_one_hot_input():
    """Epsilon: the hypothetical map is the modified gradient (relevance = x * it). Z-box [0, 1]:
    it is W+^T s, which the observed bases receive, computed from the matrix reference."""
    g = torch.Generator().manual_seed(4)
    layer = nn.Conv1d(4, 5, 3, padding=1).double()
    model = nn.Sequential(layer, nn.ReLU(), nn.Flatten(), nn.Linear(5 * 12, 2).double())
    x = nn.functional.one_hot(torch.randint(4, (3, 12), generator=g), 4).permute(0, 2, 1).double()
    plain = L.explain(model, x, target=1, composite="epsilon", hypothetical=True)
    torch.testing.assert_close(plain.relevance, x * plain.hypothetical)
    box = L.explain(
        model, x, target=1, composite=L.composites.get("epsilon-gamma-box", low=0.0, high=1.0), hypothetical=True
    )
    observed = x.bool()
    torch.testing.assert_close(box.relevance[observed], box.hypothetical[observed])
    W, b = ref.layer_as_matrix(layer, (4, 12))
    with torch.no_grad():
        hidden = layer(x)
    upper = L.explain(nn.Sequential(*list(model)[1:]), hidden, target=1, composite="epsilon")
    for i in range(len(x)):
        flat = x[i].reshape(-1)
        s = upper.relevance[i].reshape(-1) / ref.stab(
            W @ flat - ref.pos(W) @ torch.zeros_like(flat) - ref.neg(W) @ torch.ones_like(flat)
        )
        torch.testing.assert_close(box.hypothetical[i], (ref.pos(W).T @ s).reshape(4, 12), rtol=1e-9, atol=1e-12)
