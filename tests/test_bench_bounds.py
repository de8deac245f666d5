"""The MAC lower bounds of bench core, against hand counts; the adapter bench at a tiny size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_domains.bench.flops import layer_macs, lower_bound
from lrp_domains.core.composite import Composite
from lrp_domains.core.composites import get
from lrp_domains.core.rules import Epsilon, Gamma, ZBox


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


def test_layer_macs_count_linear_and_conv_products():
    x = torch.randn(5, 10)
    assert [layer["macs"] for layer in layer_macs(_mlp(), x)] == [5 * 10 * 16, 5 * 16 * 3]
    conv = nn.Sequential(nn.Conv1d(4, 8, 5, padding=2), nn.ReLU(), nn.Conv1d(8, 6, 3, groups=2))
    found = layer_macs(conv, torch.rand(2, 4, 20))
    assert [layer["macs"] for layer in found] == [2 * 8 * 20 * (4 * 5), 2 * 6 * 18 * (4 * 3)]
    assert [layer["nonnegative"] for layer in found] == [True, True]


def test_bounds_by_hand():
    model, x = _mlp(), torch.randn(5, 10)
    f1, f2 = 5 * 10 * 16, 5 * 16 * 3
    assert lower_bound(model, x, get("epsilon")) == pytest.approx(1.0)
    # z+ on a first layer whose input has both signs (5 F), then on a ReLU output (3 F)
    assert lower_bound(model, x, get("zplus")) == pytest.approx((5 * f1 + 3 * f2) / (2 * (f1 + f2)))
    # z-box first (3 F), gamma in between is absent here, epsilon last (2 F)
    composite = Composite({nn.Linear: Gamma(0.25)}, first=ZBox(0.0, 1.0), last=Epsilon())
    assert lower_bound(model, x, composite) == pytest.approx((3 * f1 + 2 * f2) / (2 * (f1 + f2)))
    # gamma on a non-negative input: 4 F
    assert lower_bound(model, x.abs(), Composite({nn.Linear: Gamma(0.25)})) == pytest.approx(2.0)
    hooks = [len(m._forward_hooks) for m in model.modules()]
    assert hooks == [0] * len(hooks)


def test_adapter_bench_runs_and_reports_every_method():
    from lrp_domains.bench.engine.adapter import run

    rows = run(n=16, batch_size=8, repeats=1, threads=1)
    methods = {row["method"] for row in rows}
    assert {
        "gradient x input",
        "engine",
        "engine + hypothetical",
        "adapter, one-hot input",
        "adapter, string input",
        "adapter, center",
        "adapter, rc_average",
    } == methods
    assert {row["composite"] for row in rows} == {"epsilon", "genomics"}
    assert all(row["ratio"] > 0 for row in rows)


def test_each_rule_declares_its_cost_and_an_undeclared_one_is_named():
    from lrp_domains.bio.architectures.rules import DetachedStdNorm
    from lrp_domains.core import rules as R
    from lrp_domains.text import rules as text_rules

    model, x = _mlp(), torch.randn(5, 10)
    f1, f2 = 5 * 10 * 16, 5 * 16 * 3
    declared = [
        R.Pass(),
        R.Identity(),
        R.Stop(),
        R.Uniform(),
        R.Epsilon(),
        R.ZPlus(),
        R.AlphaBeta(),
        R.Gamma(),
        R.ZBox(0.0, 1.0),
        R.WSquare(),
        R.Flat(),
        text_rules.LayerNormRule(),
        text_rules.ActivationRule(),
        text_rules.ComposedActivationRule(),
        DetachedStdNorm(),
    ]
    for rule in declared:
        assert isinstance(rule.macs(True), int) and isinstance(rule.macs(False), int), rule
    # today's numbers, asked of the rules: epsilon 2, z+ 3 or 5, alpha-beta and gamma 4 or 9, z-box 3, w^2 and flat 2
    assert [
        (r.macs(True), r.macs(False))
        for r in (R.Epsilon(), R.ZPlus(), R.AlphaBeta(), R.Gamma(), R.ZBox(0, 1), R.WSquare(), R.Flat())
    ] == [(2, 2), (3, 5), (4, 9), (4, 9), (3, 3), (2, 2), (2, 2)]

    class Mine(R.Rule):
        def __call__(self, call, args, kwargs):
            return call.original(*args, **kwargs)

    class Sharper(R.Epsilon):
        """Another formula than epsilon's: it does not inherit epsilon's cost."""

        def __call__(self, call, args, kwargs):
            return super().__call__(call, args, kwargs) * 1.0

    class Cheaper(R.ZPlus):
        def backward(self, layer):
            return super().backward(layer)

    for rule, name in ((Mine(), "Mine"), (Sharper(), "Sharper"), (Cheaper(), "Cheaper")):
        with pytest.raises(TypeError, match=f"{name}.*declares no cost"):
            lower_bound(model, x, Composite({nn.Linear: rule}))

    class Declared(Mine):
        cost = 3

    assert lower_bound(model, x, Composite({nn.Linear: Declared()})) == pytest.approx(1.5)
    # a subclass that keeps the formula keeps the cost
    assert lower_bound(model, x, Composite({nn.Linear: type("Mild", (R.Epsilon,), {})(0.1)})) == pytest.approx(1.0)
    assert lower_bound(model, x, Composite({nn.Linear: Declared()}, last=R.Epsilon())) == pytest.approx(
        (3 * f1 + 2 * f2) / (2 * (f1 + f2))
    )


def test_batch_one_bench_reports_each_case_against_its_bound():
    from lrp_domains.bench.engine.batch_one import run

    rows = run(("mlp-module", "residual-cnn"), batch=1, repeats=1, threads=1)
    assert [(row["case"], row["method"]) for row in rows] == [
        ("mlp-module", "epsilon"),
        ("mlp-module", "epsilon (general engine)"),
        ("residual-cnn", "epsilon"),
        ("residual-cnn", "epsilon (general engine)"),
        ("residual-cnn", "genomics"),
        ("residual-cnn", "genomics (general engine)"),
    ]
    for row in rows:
        assert row["ms"] > 0 and row["gradient_ms"] > 0
        assert row["time_ratio"] == pytest.approx(row["ms"] / row["gradient_ms"])
    for row in rows:  # every explanation dispatches at least the gradient's forward and backward operations
        assert row["operations"] >= row["gradient_operations"] > 0
    assert rows[0]["bound"] == pytest.approx(1.0)  # epsilon: a gradient's MACs
    assert rows[1]["bound"] == rows[0]["bound"]
    assert rows[3]["bound"] == rows[2]["bound"]  # the same explanation by the scope
    assert rows[4]["bound"] > 1.5  # gamma and z-box layers cost more than a gradient
    with pytest.raises(ValueError, match="unknown case"):
        run(("resnet",), repeats=1)


def test_the_mlp_held_in_a_module_gets_the_bare_sequentials_relevance():
    """bench core's mlp-module case (an MLP held in a module, the direct path checked per call)
    and the general engine (strict mode) give the bare Sequential's relevance."""
    from lrp_domains.bench.engine.batch_one import MLPInModule
    from lrp_domains.core.engine.attribution import explain

    torch.manual_seed(0)
    held = MLPInModule().eval()
    x = torch.randn(8, 765)
    for name in ("epsilon", "zplus"):
        inside = explain(held, x, composite=name).relevance
        general = explain(held, x, composite=name, strict=True).relevance
        bare = explain(held.net, x, composite=name).relevance
        torch.testing.assert_close(inside, bare, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(general, bare, rtol=1e-5, atol=1e-6)


def test_operations_are_counted_at_the_top_level_only():
    """By hand: ``torch.ones`` is one operation (its empty and fill_ inside it do not count), ``+ 1``
    another, a matrix product a third; a Python-only function none."""
    from lrp_domains.bench.measure import count_operations

    a = torch.ones(2, 2)
    assert count_operations(lambda: torch.ones(3) + 1) == 2
    assert count_operations(lambda: (a @ a).relu()) == 2
    assert count_operations(lambda: sum(range(10))) == 0
