"""The sign of a layer's input is read off the forward (:class:`lrp_domains.core.rules.SignFlag`),
not asked again in the backward: the same relevance, and on a GPU no host sync per layer (the
device check, ``workflows/device/gpu_check.sh``, runs the CUDA half)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.core import rules
from lrp_domains.core.rules import SignFlag


def test_the_flag_says_whether_every_value_is_nonnegative():
    assert bool(SignFlag(torch.tensor([0.0, 1.0, 2.0])))
    assert not bool(SignFlag(torch.tensor([0.0, -1e-30, 2.0])))
    assert bool(SignFlag(torch.zeros(0)))  # nothing negative
    assert SignFlag(torch.ones(3)).event is None  # on a CPU: the comparison itself


@pytest.mark.parametrize("rule", ["gamma", "alpha2beta1", "zplus"])
def test_rules_that_branch_on_the_sign_get_it_from_the_forward(rule, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).eval()
    x = torch.randn(3, 6)
    composite = {
        "gamma": L.composites.get("epsilon-gamma"),
        "alpha2beta1": L.composites.get("alpha2beta1"),
        "zplus": L.composites.get("zplus"),
    }[rule]
    expected = L.explain(model, x, 0, composite, strict=True, check_delta=False).relevance
    seen: list[bool | None] = []
    asked: list[int] = []
    original_nonnegative = rules._Layer.nonnegative

    def nonnegative(layer):
        seen.append(None if layer.sign is None else bool(layer.sign))
        asked.append(1)
        return original_nonnegative(layer)

    monkeypatch.setattr(rules._Layer, "nonnegative", nonnegative)
    relevance = L.explain(model, x, 0, composite, strict=True, check_delta=False).relevance
    assert torch.equal(relevance, expected)
    assert asked, "no rule asked for the sign"
    assert None not in seen  # every answer came from the forward's flag
    # the layer after the ReLU sees x >= 0, the one after the tanh does not, the input is mixed
    assert True in seen and False in seen
