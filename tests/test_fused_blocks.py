"""MLP blocks (an nn.Sequential of Linear, ReLU and shape-only modules) anywhere in a model run as
one autograd node computing their modules' rules (issue #27): the relevance equals the module-by-
module engine's, and the block is left to the modules where the input layer's rule, a source or
the ledger needs them one by one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.core.composites import get
from lrp_domains.core.engine import attribution, sequential
from lrp_domains.core.engine import scope as scope_module


class ConvWithHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 5, padding=2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 20, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)))


class Wrapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def fused_calls(monkeypatch):
    calls = []
    original = sequential.fused_block

    def counting(x, plan):
        calls.append(plan)
        return original(x, plan)

    monkeypatch.setattr(scope_module, "fused_block", counting)
    # fusing is the scope's: the traced graph plan (tests/test_graph_plan.py) stays out
    monkeypatch.setattr(attribution, "graph_plan_for", lambda *args: None)
    return calls


def _unfused(model, x, composite, **kwargs):
    original = scope_module.Scope._fused
    scope_module.Scope._fused = lambda *args: None
    try:
        return L.explain(model, x, composite=composite, **kwargs)
    finally:
        scope_module.Scope._fused = original


def _onehot(n: int = 5, length: int = 20, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return nn.functional.one_hot(torch.randint(4, (n, length), generator=g), 4).permute(0, 2, 1).double()


@pytest.mark.parametrize("composite", ["epsilon", "zplus", "alpha2beta1", "epsilon-gamma-box", "genomics"])
def test_a_dense_head_is_fused_and_gives_the_module_by_module_relevance(composite, fused_calls):
    torch.manual_seed(0)
    model, x = ConvWithHead().double().eval(), _onehot()
    options = {"low": 0.0, "high": 1.0} if composite == "epsilon-gamma-box" else {}
    if composite == "genomics":
        from lrp_domains.bio.composites import genomics

        chosen = genomics()
    else:
        chosen = get(composite, **options)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = L.explain(model, x, composite=chosen)
    assert len(fused_calls) == 1  # the head, as one node
    plain = _unfused(model, x, chosen)
    torch.testing.assert_close(fused.relevance, plain.relevance, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fused.output, model(x))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all("forward" not in vars(m) for m in model.modules())


def test_a_sequential_held_in_a_module_is_fused(fused_calls):
    torch.manual_seed(1)
    model = Wrapped().double().eval()
    x = torch.randn(6, 12, dtype=torch.float64)
    for name in ("epsilon", "zplus"):
        # strict: the general engine (without it a held MLP takes the direct path, tests/test_held_plan.py)
        fused = L.explain(model, x, composite=name, strict=True)
        unfused = _unfused(model, x, name, strict=True)
        torch.testing.assert_close(fused.relevance, unfused.relevance, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fused.relevance, L.explain(model.net, x, composite=name).relevance)
    assert len(fused_calls) == 2


def test_where_modules_are_needed_one_by_one_the_block_is_not_fused(fused_calls):
    torch.manual_seed(2)
    model = Wrapped().double().eval()
    x = torch.rand(6, 12, dtype=torch.float64)
    # the input layer's rule (z-box) is claimed inside the block
    boxed = get("epsilon-gamma-box", low=0.0, high=1.0)
    result = L.explain(model, x, composite=boxed, strict=True)  # strict: the general engine
    torch.testing.assert_close(result.relevance, L.explain(model.net, x, composite=boxed).relevance)
    # a source inside the block, and the ledger
    L.explain(model, x, composite="epsilon", sources=["net.2"])
    ledger = L.explain(model, x, composite="epsilon", ledger=True, strict=True)
    assert fused_calls == []
    assert {"net.0", "net.2", "net.4"} <= set(ledger.ledger["module"])


def test_hooks_or_training_mode_inside_the_block_leave_it_to_the_modules(fused_calls):
    torch.manual_seed(3)
    model = Wrapped().double().eval()
    x = torch.randn(4, 12, dtype=torch.float64)
    seen = []
    handle = model.net[2].register_forward_hook(lambda *args: seen.append(1))
    try:
        L.explain(model, x, composite="epsilon", strict=True)
    finally:
        handle.remove()
    assert seen == [1] and fused_calls == []
