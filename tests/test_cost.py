"""Rules that need modified forwards run each one once, and skip terms that vanish.

Counted, not timed: the number of convolutions an explanation runs on the full batch.
"""

import models as M
import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains import rules as R


class CountingConv1d(nn.Conv1d):
    """A Conv1d that counts its convolutions on batches larger than one example."""

    calls = 0

    def _conv_forward(self, input, weight, bias):
        if input.shape[0] > 1:
            CountingConv1d.calls += 1
        return super()._conv_forward(input, weight, bias)


def _net():
    M.seeded(0)
    conv = CountingConv1d(8, 8, 3, padding=1)
    return nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.ReLU(), conv, nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 2))


@pytest.mark.parametrize(("rule", "extra"), [(R.Epsilon(), 0), (R.ZPlus(), 1), (R.Gamma(), 1), (R.AlphaBeta(), 1)])
def test_rules_on_non_negative_inputs_add_one_forward_at_most(rule, extra):
    model = _net().eval()
    x = M.one_hot_batch(5, 16, torch.Generator().manual_seed(0))
    CountingConv1d.calls = 0
    L.explain(model, x, composite=L.Composite({CountingConv1d: rule, nn.Conv1d: R.Epsilon(), nn.Linear: R.Epsilon()}))
    assert CountingConv1d.calls == 1 + extra


def test_signed_inputs_need_the_negative_terms():
    model = _net().eval()
    model[1] = nn.Identity()  # the counted conv now sees signed inputs
    x = M.one_hot_batch(5, 16, torch.Generator().manual_seed(0))
    CountingConv1d.calls = 0
    L.explain(model, x, composite=L.Composite({CountingConv1d: R.ZPlus(), nn.Linear: R.Epsilon()}))
    assert CountingConv1d.calls == 1 + 2


def test_zbox_bounds_are_forwarded_for_one_example_only():
    M.seeded(1)
    conv = CountingConv1d(4, 8, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 2)).eval()
    x = M.one_hot_batch(5, 16, torch.Generator().manual_seed(0))
    CountingConv1d.calls = 0
    L.explain(model, x, composite=L.composites.get("epsilon-gamma-box", low=0.0, high=1.0))
    assert CountingConv1d.calls == 1
