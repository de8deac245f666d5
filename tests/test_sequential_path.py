"""The direct MLP path (core/engine/sequential.py) against the general engine, rule by rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.core.composite import Composite
from lrp_domains.core.composites import get
from lrp_domains.core.engine.sequential import plan_for
from lrp_domains.core.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus


class General(nn.Sequential):
    """The same layers; a subclass takes the general engine."""


def _pair(seed=0, flatten=False, dropout=False):
    torch.manual_seed(seed)
    layers = (
        ([nn.Flatten()] if flatten else [])
        + [nn.Linear(12, 16), nn.ReLU()]
        + ([nn.Dropout(0.3)] if dropout else [])
        + [nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)]
    )
    fast = nn.Sequential(*layers).double().eval()
    return fast, General(*fast)


COMPOSITES = {
    "epsilon": lambda: get("epsilon"),
    "zplus": lambda: get("zplus"),
    "alpha2beta1": lambda: get("alpha2beta1"),
    "epsilon-plus": lambda: get("epsilon-plus"),
    "lrp-0": lambda: Composite({nn.Linear: Epsilon(0.0)}),
    "zbox first, gamma, epsilon last": lambda: Composite(
        {nn.Linear: Gamma(0.25)}, first=ZBox(-3.0, 3.0), last=Epsilon()
    ),
    "flat first, alpha-beta": lambda: Composite({nn.Linear: AlphaBeta(2, 1)}, first=Flat()),
    "w-square first, z+": lambda: Composite({nn.Linear: ZPlus()}, first=WSquare()),
}


@pytest.mark.parametrize("name", list(COMPOSITES))
@pytest.mark.parametrize("target", [None, 2, "callable"])
def test_mlp_path_equals_the_general_engine(name, target):
    fast, general = _pair()
    composite = COMPOSITES[name]()
    assert plan_for(fast, composite) is not None and plan_for(general, composite) is None
    x = torch.randn(7, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    chosen = (lambda out: out[:, 1] - out[:, 0]) if target == "callable" else target
    a = L.explain(fast, x, chosen, composite, hypothetical=True, check_delta=False)
    b = L.explain(general, x, chosen, composite, hypothetical=True, check_delta=False)
    for field in ("relevance", "output", "explained", "delta", "hypothetical"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=1e-10, atol=1e-12, msg=field)
    if target != "callable":
        assert torch.equal(a.target, b.target)


def test_flatten_and_dropout_and_batches():
    fast, general = _pair(flatten=True, dropout=True)
    fast.train()  # explained in eval mode either way: dropout passes
    general.train()
    x = torch.randn(9, 3, 4, dtype=torch.float64)
    a = L.explain(fast, x, composite="epsilon", batch_size=4, check_delta=False)
    b = L.explain(general, x, composite="epsilon", batch_size=4, check_delta=False)
    torch.testing.assert_close(a.relevance, b.relevance, rtol=1e-10, atol=1e-12)
    assert fast.training and all(m.training for m in fast)


def test_anything_unusual_takes_the_general_engine():
    composite = get("epsilon")
    fast, _ = _pair()
    handle = fast[1].register_forward_hook(lambda *a: None)
    assert plan_for(fast, composite) is None  # a hook must run: the model runs as it is
    handle.remove()
    assert plan_for(fast, composite) is not None
    assert plan_for(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), composite) is None
    assert plan_for(nn.Sequential(nn.Linear(3, 3), nn.GELU()), composite) is None
    assert plan_for(nn.Sequential(nn.Sequential(nn.Linear(3, 3))), composite) is None
    # sources or a custom output: the general engine
    x = torch.randn(4, 12, dtype=torch.float64)
    a = L.explain(fast, x, sources=["2"], check_delta=False)
    assert "2" in a.sources


def test_model_is_only_read():
    fast, _ = _pair()
    fast.train()
    before = {k: v.clone() for k, v in fast.state_dict().items()}
    flags = [p.requires_grad for p in fast.parameters()]
    L.explain(fast, torch.randn(3, 12, dtype=torch.float64), check_delta=False)
    assert all(torch.equal(before[k], v) for k, v in fast.state_dict().items())
    assert flags == [p.requires_grad for p in fast.parameters()] and fast.training


def test_a_rule_subclass_with_another_formula_takes_the_general_engine():
    from lrp_domains.core.gradients import scale_grad
    from lrp_domains.core.rules import Pass

    class Doubled(Epsilon):
        """Epsilon's output, twice its gradient: not epsilon's formula."""

        def __call__(self, call, args, kwargs):
            return scale_grad(super().__call__(call, args, kwargs), 2.0)

    class Halved(Pass):
        def __call__(self, call, args, kwargs):
            return scale_grad(call.original(*args, **kwargs), 0.5)

    class Mild(Epsilon):
        """Epsilon with another default: the same formula, the direct path."""

        def __init__(self):
            super().__init__(0.01)

    class MyZPlus(ZPlus):
        def backward(self, layer):  # a layer rule's formula is its backward: the direct path evaluates it
            return 3.0 * super().backward(layer)

    fast, general = _pair()
    x = torch.randn(7, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for composite, direct in (
        (Composite({nn.Linear: Doubled()}), False),
        (Composite({nn.Linear: Epsilon(), nn.ReLU: Halved()}), False),
        (Composite({nn.Linear: Mild()}), True),
        (Composite({nn.Linear: MyZPlus()}), True),
    ):
        assert (plan_for(fast, composite) is not None) == direct, composite
        a = L.explain(fast, x, 2, composite, check_delta=False)
        b = L.explain(general, x, 2, composite, check_delta=False)
        torch.testing.assert_close(a.relevance, b.relevance, rtol=1e-10, atol=1e-12)
    doubled = L.explain(fast, x, 2, Composite({nn.Linear: Doubled()}), check_delta=False)
    plain = L.explain(fast, x, 2, Composite({nn.Linear: Epsilon()}), check_delta=False)
    torch.testing.assert_close(doubled.relevance, 8 * plain.relevance)  # three layers, each doubling


def test_an_input_layer_rule_after_a_flatten_takes_the_general_engine():
    """Flatten first, then a Linear whose rule writes input relevance directly (w-square): the
    direct path has no input gradient to give it, so it is not used; the result is the engine's."""
    from lrp_domains.core.composite import Composite
    from lrp_domains.core.engine.attribution import explain
    from lrp_domains.core.engine.sequential import plan_for
    from lrp_domains.core.rules import Epsilon, WSquare

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    composite = Composite({"1": WSquare(), nn.Linear: Epsilon()})
    assert plan_for(model, composite) is None
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    result = explain(model, x, composite=composite)
    assert result.relevance.shape == x.shape and torch.isfinite(result.relevance).all()


def test_epsilon_after_a_relu_is_the_same_bits_from_the_relus_output():
    # the direct path scales by positive + eps below a ReLU (one elementwise pass fewer): wherever
    # z <= 0 the ReLU's backward already zeroed the gradient, elsewhere positive + eps = |z| + eps
    from lrp_domains.core.gradients import epsilon_scale, epsilon_scale_rectified

    generator = torch.Generator().manual_seed(3)
    z = torch.randn(64, 33, generator=generator)
    z[::5, ::3] = 0.0  # exact zeros: dead, as the ReLU's mask says
    grad = torch.randn(64, 33, generator=generator)
    for epsilon in (1e-6, 0.25):
        gated = torch.ops.aten.threshold_backward(grad, torch.relu(z), 0.0)
        expected = epsilon_scale(torch.ops.aten.threshold_backward(grad, z, 0.0), z, epsilon)
        assert torch.equal(epsilon_scale_rectified(gated, torch.relu(z), epsilon), expected)


def test_the_kept_plan_follows_hooks_replaced_modules_and_composites():
    # plan_for keeps one plan per model; every change it reads must make it again
    fast, _ = _pair()
    epsilon = get("epsilon")
    plan = plan_for(fast, epsilon)
    assert plan is not None and plan_for(fast, epsilon) is plan  # kept
    handle = fast[2].register_forward_hook(lambda *args: None)
    assert plan_for(fast, epsilon) is None  # a hook: the general engine
    handle.remove()
    assert plan_for(fast, epsilon) is not None
    fast[0] = nn.Linear(12, 16).double()  # a new layer: a new plan with it
    replanned = plan_for(fast, epsilon)
    assert replanned is not None and replanned is not plan and replanned.steps[0].module is fast[0]
    zplus = get("zplus")
    assert plan_for(fast, zplus).steps[0].rule is not replanned.steps[0].rule  # another composite
    x = torch.randn(5, 12, dtype=torch.float64)
    general = General(*fast)
    for composite in (epsilon, zplus):
        a = L.explain(fast, x, 1, composite, check_delta=False)
        b = L.explain(general, x, 1, composite, check_delta=False)
        torch.testing.assert_close(a.relevance, b.relevance, rtol=1e-10, atol=1e-12)
