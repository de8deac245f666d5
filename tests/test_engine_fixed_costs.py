"""What the engine keeps between calls to cut its fixed cost per call (issue #27) follows every
change a user can make: rules resolved per module, and a module computed by its rule with the
functional-rule mode off the stack gives the same relevance as with it."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.core.composite import Composite
from lrp_domains.core.rules import Epsilon, Pass, ZPlus


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


def test_resolved_rules_follow_a_changed_composite_and_new_modules():
    from lrp_domains.core.engine.scope import _resolved_rules

    torch.manual_seed(0)
    model = Net().double().eval()

    def rules(composite: Composite) -> dict[str, object]:
        named = list(model.named_modules())
        return dict(zip([name for name, _ in named], _resolved_rules(model, composite, named)))

    composite = Composite({nn.Linear: Epsilon()})
    first = rules(composite)
    assert first["first"] is composite.rules[nn.Linear] and first[""] is None

    composite.rules["second"] = ZPlus()  # a rule by name, added to the same composite
    assert rules(composite)["second"] is composite.rules["second"]
    composite.rules[nn.Linear] = Pass()  # a rule replaced
    assert isinstance(rules(composite)["first"], Pass)

    predicate = Composite({(lambda m: isinstance(m, nn.Linear) and m.out_features == 3): ZPlus()})
    assert isinstance(rules(predicate)["second"], ZPlus) and rules(predicate)["first"] is None
    model.second = nn.Linear(8, 5).double()  # a new module is asked afresh
    assert rules(predicate)["second"] is None


def test_explanations_follow_a_rule_changed_between_calls():
    torch.manual_seed(1)
    model = Net().double().eval()
    x = torch.randn(4, 6, dtype=torch.float64)
    composite = Composite({nn.Linear: Epsilon()})
    first = L.explain(model, x, 1, composite, check_delta=False).relevance
    composite.rules[nn.Linear] = ZPlus()
    second = L.explain(model, x, 1, composite, check_delta=False).relevance
    expected = L.explain(model, x, 1, Composite({nn.Linear: ZPlus()}), check_delta=False).relevance
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second, expected, rtol=0, atol=0)


class TorchOpsInside(nn.Module):
    """A module with a rule whose forward calls torch functions (which the mode would see)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 6) / 3)
        self.bias = nn.Parameter(torch.randn(6) / 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.add(nn.functional.linear(x, self.weight, self.bias), torch.mul(x, 0.5))


def test_a_module_with_a_rule_gives_the_same_relevance_without_the_mode():
    # Epsilon on a whole block: its inner torch calls pass through untouched either way; compare
    # with the rule written out by hand, W' = W + 0.5 I, b' = b, R = x * W'^T (g z / (z + eps sign z))
    torch.manual_seed(2)
    block = TorchOpsInside().double().eval()
    model = nn.Sequential(block, nn.ReLU(), nn.Linear(6, 2)).double().eval()

    class Outer(nn.Module):  # not a bare Sequential: the general engine
        def __init__(self) -> None:
            super().__init__()
            self.body = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    x = torch.randn(3, 6, dtype=torch.float64)
    composite = Composite({TorchOpsInside: Epsilon(0.1), nn.Linear: Epsilon(0.1)})
    result = L.explain(Outer().eval(), x, 0, composite, strict=True, check_delta=False)
    weight = block.weight.detach() + 0.5 * torch.eye(6, dtype=torch.float64)
    z1 = x @ weight.T + block.bias.detach()
    h = torch.relu(z1)
    head = model[2]
    z2 = h @ head.weight.detach().T + head.bias.detach()
    g2 = torch.zeros_like(z2)

    def stabilized(z: torch.Tensor) -> torch.Tensor:  # z + 0.1 sign(z), sign(0) = 1, in float64
        return z + 0.1 * (2 * (z >= 0).double() - 1)

    g2[:, 0] = z2[:, 0] / stabilized(z2[:, 0])
    gh = g2 @ head.weight.detach()
    g1 = gh * (z1 > 0) * z1 / stabilized(z1)
    expected = x * (g1 @ weight)
    torch.testing.assert_close(result.relevance, expected, rtol=1e-10, atol=1e-12)


class Head(nn.Module):
    """An MLP after another layer: the general engine, its Sequential run as one fused block."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(6, 6)
        self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.pre(x))


def test_a_kept_block_plan_follows_hooks_modes_and_replaced_layers(monkeypatch):
    import copy

    from lrp_domains.core.engine import attribution

    # the scope's block plans are what is followed: the traced graph plan (tests/test_graph_plan.py) stays out
    monkeypatch.setattr(attribution, "graph_plan_for", lambda *args: None)

    from lrp_domains.core.engine.scope import _BLOCK_PLANS

    torch.manual_seed(3)
    model = Head().double().eval()
    x = torch.randn(4, 6, dtype=torch.float64)

    def check(fused: bool) -> None:
        result = L.explain(model, x, 2, "epsilon", check_delta=False)
        assert (_BLOCK_PLANS[model.net][1] is not None) == fused
        expected = L.explain(copy.deepcopy(model), x, 2, "epsilon", check_delta=False)  # new modules
        torch.testing.assert_close(result.relevance, expected.relevance, rtol=1e-12, atol=1e-14)

    check(fused=True)
    handle = model.net[2].register_forward_hook(lambda *args: None)
    check(fused=False)  # a hook: the modules one by one
    handle.remove()
    check(fused=True)
    model.net[0] = nn.Linear(6, 8).double()  # a replaced layer: a new plan with it
    check(fused=True)
    assert _BLOCK_PLANS[model.net][1].steps[0].module is model.net[0]


def _explanation(explained: list[float], delta: list[float]) -> L.Explanation:
    e, d = torch.tensor(explained), torch.tensor(delta)
    return L.Explanation(relevance=(e - d)[:, None], output=e[:, None], target=None, explained=e, delta=d)


@pytest.mark.parametrize("copies", [1, 40])  # 4 and 160 examples: per example in Python, and as tensors
def test_the_large_delta_warning_reads_every_example_the_same_way_at_any_batch_size(copies):
    """|delta| > 50% of |explained| + |explained - delta|, by hand: 1 - 0.2 keeps most (no warning);
    explained 1 with all of it lost (delta 1) warns; a NaN delta never compares larger."""
    from lrp_domains.core.engine.attribution import warn_on_large_delta

    quiet = _explanation([1.0, -2.0, 0.0, 5.0] * copies, [0.2, -0.5, 0.0, float("nan")] * copies)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_on_large_delta(quiet)
    loud = _explanation([1.0, -2.0, 0.0, 5.0] * copies, [0.2, -0.5, 0.0, 5.0] * copies)
    with pytest.warns(UserWarning, match="lost or gained more than 50%"):
        warn_on_large_delta(loud)
    created = _explanation([1.0] * 4 * copies, [0.2] * (4 * copies - 1) + [-3.0])  # 4 created from 1
    with pytest.warns(UserWarning, match="lost or gained more than 50%"):
        warn_on_large_delta(created)
