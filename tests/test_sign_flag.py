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
        seen.append(None if layer.flag is None else bool(layer.flag))
        asked.append(1)
        return original_nonnegative(layer)

    monkeypatch.setattr(rules._Layer, "nonnegative", nonnegative)
    relevance = L.explain(model, x, 0, composite, strict=True, check_delta=False).relevance
    assert torch.equal(relevance, expected)
    assert asked, "no rule asked for the sign"
    assert None not in seen  # every answer came from the forward's flag
    # the layer after the ReLU sees x >= 0, the one after the tanh does not, the input is mixed
    assert True in seen and False in seen


def test_the_box_flag_says_whether_every_value_is_inside_the_bounds():
    box = rules.ZBox(0.0, 1.0)
    assert bool(box.forward_flag(torch.tensor([[0.0, 1.0, 0.5]])))
    assert not bool(box.forward_flag(torch.tensor([[0.0, 1.0 + 1e-6, 0.5]])))
    assert not bool(box.forward_flag(torch.tensor([[-1e-30, 1.0]])))
    per_position = rules.ZBox(torch.tensor([0.0, -1.0]), torch.tensor([1.0, 0.0]))  # bounds per feature
    assert bool(per_position.forward_flag(torch.tensor([[0.5, -0.5], [1.0, -1.0]])))
    assert not bool(per_position.forward_flag(torch.tensor([[0.5, 0.5]])))


@pytest.mark.parametrize("inside", [True, False])
def test_z_box_takes_its_stabilizer_choice_from_the_forward(inside, monkeypatch):
    """The same relevance as z-box asking the input in its backward (the flag forced away), inside
    the box (every value in [0, 1]: the one-sided stabilizer) and outside it (the signed one)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 6, 5), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 2)).eval()
    x = torch.rand(3, 4, 20) if inside else torch.randn(3, 4, 20)
    composite = L.composites.get("epsilon-gamma-box", low=0.0, high=1.0)
    seen: list[bool | None] = []
    original = rules.ZBox.backward

    def backward(rule, layer, flagged=True):
        seen.append(None if layer.flag is None else bool(layer.flag))
        if not flagged:
            layer.flag = None
        return original(rule, layer)

    monkeypatch.setattr(rules.ZBox, "backward", backward)
    relevance = L.explain(model, x, 0, composite, strict=True, check_delta=False).relevance
    assert seen == [inside]
    monkeypatch.setattr(rules.ZBox, "backward", lambda rule, layer: backward(rule, layer, flagged=False))
    expected = L.explain(model, x, 0, composite, strict=True, check_delta=False).relevance
    assert torch.equal(relevance, expected)
