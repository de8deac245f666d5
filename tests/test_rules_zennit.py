"""Our rules and composites give zennit 0.5.1's own numbers (tests/data/reference)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import lrp_domains as L
from lrp_domains import rules as R
from lrp_domains.core.canonizers import MergeBatchNorm

LAYERS = {
    "Linear": lambda bias: nn.Linear(8, 5, bias=bias),
    "Conv1d": lambda bias: nn.Conv1d(4, 6, 5, bias=bias),
    "Conv2d": lambda bias: nn.Conv2d(3, 4, 3, bias=bias),
}
RULES = {
    "Epsilon": (R.Epsilon(1e-6), False),
    "ZPlus": (R.ZPlus(), False),
    "AlphaBeta": (R.AlphaBeta(2, 1), False),
    "Gamma": (R.Gamma(0.25), False),
    "ZBox": (R.ZBox(-3.0, 3.0), True),
    "WSquare": (R.WSquare(), True),
    "Flat": (R.Flat(), True),
}


@pytest.fixture(scope="module")
def zennit(request):
    from conftest import REFERENCE_DIR

    cases = json.loads((REFERENCE_DIR / "zennit_rules.json").read_text())["cases"]
    return load_file(REFERENCE_DIR / "zennit_rules.safetensors"), cases


def test_every_case_is_covered(zennit):
    _, cases = zennit
    assert {(c["layer"], c["rule"]) for c in cases} == {(layer, rule) for layer in LAYERS for rule in RULES}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layer_name", sorted(LAYERS))
@pytest.mark.parametrize("rule_name", sorted(RULES))
def test_single_layer_rules_match_zennit(zennit, rule_name, layer_name, bias):
    data, _ = zennit
    key = f"{layer_name}_{'bias' if bias else 'nobias'}"
    layer = LAYERS[layer_name](bias).double()
    layer.load_state_dict({name: data[f"{key}.{name}"] for name in ("weight", "bias") if f"{key}.{name}" in data})
    rule, first = RULES[rule_name]
    composite = L.Composite({}, first=rule) if first else L.Composite({(nn.Linear, nn.Conv1d, nn.Conv2d): rule})
    result = L.explain(nn.Sequential(layer, nn.Flatten()), data[f"{key}.input"], data[f"{key}.target"], composite)
    torch.testing.assert_close(result.relevance, data[f"{key}.{rule_name}"], rtol=1e-10, atol=1e-13)


def _cnn(data):
    model = nn.Sequential(
        nn.Conv1d(4, 16, 9, padding=4),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.MaxPool1d(4),
        nn.Conv1d(16, 16, 5, padding=2),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(16, 8),
        nn.ReLU(),
        nn.Linear(8, 2),
    ).double()
    model.load_state_dict({k[len("cnn.state.") :]: v for k, v in data.items() if k.startswith("cnn.state.")})
    return model.eval()


COMPOSITES = {
    "EpsilonGammaBox": lambda: L.composites.get("epsilon-gamma-box", low=0.0, high=1.0),
    "EpsilonPlus": lambda: L.composites.get("epsilon-plus"),
}


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_composites_match_zennit_on_a_cnn_with_batchnorm(zennit, name):
    """zennit merges BatchNorm by rewriting the conv weights and resetting the norm to identity
    statistics, but the norm keeps its eps: it still scales by 1/sqrt(1 + eps) and has no rule,
    so relevance shrinks by that factor at each norm. We merge exactly, so we agree to ~1e-5."""
    data, _ = zennit
    result = L.explain(_cnn(data), data["cnn.input"], 1, COMPOSITES[name]())
    expected = data[f"cnn.{name}"]
    torch.testing.assert_close(result.relevance, expected, rtol=0, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_composites_match_zennit_exactly_in_zennits_merged_form(zennit, name):
    """Rebuild zennit's merged model (merged conv weights, identity-statistics norms that keep
    eps and get the plain gradient) and compare at float64 precision."""
    data, _ = zennit
    model = _cnn(data)
    with torch.no_grad():
        for i in (0, 4):
            weight, bias = MergeBatchNorm.merged_parameters(model[i], model[i + 1])
            model[i].weight.copy_(weight)
            model[i].bias.copy_(bias)
            norm = model[i + 1]
            norm.running_mean.zero_()
            norm.running_var.fill_(1)
            norm.weight.fill_(1)
            norm.bias.zero_()
    composite = COMPOSITES[name]()
    composite = L.Composite({**composite.rules, nn.BatchNorm1d: R.Pass()}, first=composite.first, canonizers=[])
    result = L.explain(model, data["cnn.input"], 1, composite)
    torch.testing.assert_close(result.relevance, data[f"cnn.{name}"], rtol=1e-10, atol=1e-14)
