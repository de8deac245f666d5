"""Any model fx traces whose rules are gradients (LRP-epsilon on its layers, the gradient on
activations, poolings and reshapes, BatchNorms merged) takes its traced graph instead of the
scope's per-module machinery (issue #27): the relevance, outputs, targets and hypothetical
contributions equal the general engine's bit for bit (strict mode runs the general engine); the
scope is not entered once the plan is made; anything the plan does not cover goes to the general
engine with the same result; a flag a ``forward`` branches on is followed; the model comes back
unchanged."""

from __future__ import annotations

import warnings

import pytest
import torch
from models import one_hot_batch, seeded
from torch import nn

import lrp_domains as L
from lrp_domains.bench.engine.adapter import residual_cnn
from lrp_domains.core.composite import Composite
from lrp_domains.core.composites import epsilon, get
from lrp_domains.core.engine import graph_plan
from lrp_domains.core.engine.graph_plan import graph_plan_for
from lrp_domains.core.engine.scope import Scope


class TwoBranches(nn.Module):
    """A 2-D CNN with two branches concatenated, a residual add, in-place ReLUs, max pooling and a
    flatten written in ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.BatchNorm2d(6)
        self.act = nn.ReLU(inplace=True)
        self.left = nn.Conv2d(6, 4, 3, padding=1)
        self.right = nn.Sequential(nn.Conv2d(6, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.mix = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.Linear(8 * 4 * 4, 16), nn.ReLU(inplace=True), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm(self.stem(x)))
        both = torch.cat([torch.relu(self.left(h)), self.right(h)], dim=1)
        h = self.pool(self.mix(both) + both)
        return self.head(h.view(h.size(0), -1))


class Switch(nn.Module):
    """A residual block whose ``forward`` branches on a flag."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3, padding=1)
        self.out = nn.Sequential(nn.Flatten(), nn.Linear(4 * 10, 2))
        self.skip = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        if self.skip:
            h = h + x
        return self.out(h)


def _randomize_norms(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _inputs(model: nn.Module, n: int, generator: torch.Generator) -> torch.Tensor:
    if isinstance(model, TwoBranches):
        return torch.randn(n, 3, 8, 8, generator=generator)
    length = 10 if isinstance(model, Switch) else 40
    return one_hot_batch(n, length, generator)


def _models() -> dict[str, nn.Module]:
    seeded(0)
    return {
        "residual-cnn": residual_cnn(channels=6),
        "two-branches": _randomize_norms(TwoBranches()),
        "switch": Switch().eval(),
        "with-gelu": WithGelu().eval(),
    }


def _composite(name: str) -> Composite:
    if name == "lrp-0":
        return epsilon(0.0)
    if name == "epsilon-gamma-box":
        return get(name, low=0.0, high=1.0)
    if name == "genomics":
        from lrp_domains.bio.composites import genomics

        return genomics()
    return get(name)


def _refuse_scopes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self, *args):
        raise AssertionError("the general engine's scope was entered")

    monkeypatch.setattr(Scope, "__enter__", refused)


def _same(ours: L.Explanation, general: L.Explanation) -> None:
    assert torch.equal(ours.relevance, general.relevance)
    assert torch.equal(ours.output, general.output)
    assert torch.equal(ours.explained, general.explained)
    assert (ours.target is None and general.target is None) or torch.equal(ours.target, general.target)
    assert torch.equal(ours.delta, general.delta)
    if general.hypothetical is None:
        assert ours.hypothetical is None
    else:
        assert torch.equal(ours.hypothetical, general.hypothetical)


COMPOSITES = [
    "epsilon",
    "lrp-0",
    "zplus",
    "alpha2beta1",
    "epsilon-plus",
    "epsilon-gamma",
    "epsilon-gamma-box",
    "genomics",
]


@pytest.mark.parametrize("name", ["residual-cnn", "two-branches", "switch", "with-gelu"])
@pytest.mark.parametrize("composite", COMPOSITES)
def test_the_general_engines_relevance_bit_for_bit(monkeypatch, name, composite):
    model = _models()[name]
    rules = _composite(composite)
    x = _inputs(model, 5, seeded(1))
    general = L.explain(model, x, None, rules, strict=True, hypothetical=True, batch_size=2)
    contrast = (lambda out: out[:, 1] - out[:, 0]) if name != "residual-cnn" else (lambda out: -out[:, 0])  # noqa: E731
    contrasted = L.explain(model, x, contrast, rules, strict=True)
    if name == "switch" and rules.first is not None:
        # the input also reaches the skip add: whether a view of it claims `first` is the scope's call
        assert graph_plan_for(model, rules, x) is None
    else:
        assert graph_plan_for(model, rules, x) is not None
        _refuse_scopes(monkeypatch)
    _same(L.explain(model, x, None, rules, hypothetical=True, batch_size=2), general)
    _same(L.explain(model, x, contrast, rules), contrasted)


def test_a_composite_made_again_by_name_keeps_the_plan():
    model, x = residual_cnn(channels=4), one_hot_batch(2, 30, seeded(2))
    assert graph_plan_for(model, get("epsilon"), x) is graph_plan_for(model, get("epsilon"), x)
    assert graph_plan_for(model, get("epsilon"), x) is not graph_plan_for(model, epsilon(0.5), x)


def test_a_flag_the_forward_branches_on_is_followed(monkeypatch):
    model = _models()["switch"]
    x = _inputs(model, 4, seeded(3))
    with_skip = L.explain(model, x)
    model.skip = False
    without = L.explain(model, x)
    assert not torch.allclose(with_skip.relevance, without.relevance)  # the flag matters here
    _same(without, L.explain(model, x, strict=True))
    _refuse_scopes(monkeypatch)
    _same(L.explain(model, x), without)


def test_the_sequence_explainer_takes_the_plan(monkeypatch):
    from lrp_domains.bio import SequenceExplainer

    model = residual_cnn(channels=6)
    explainer = SequenceExplainer(model, composite="epsilon")
    x = one_hot_batch(3, 40, seeded(4))
    first = explainer.explain(x)
    general = L.explain(explainer.runner, x, None, explainer.composite, strict=True, hypothetical=True)
    _refuse_scopes(monkeypatch)
    again = explainer.explain(x)
    assert torch.equal(again.relevance, first.relevance)
    assert torch.equal(again.relevance, general.relevance)
    assert torch.equal(again.hypothetical, general.hypothetical)


class WithGelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act, self.out = nn.Conv1d(4, 3, 3), nn.GELU(), nn.Linear(3 * 38, 2)

    def forward(self, x):
        return self.out(self.act(self.conv(x)).flatten(1))


class ScaledInForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.out = nn.Conv1d(4, 3, 3), nn.Linear(3 * 38, 2)

    def forward(self, x):
        return self.out(torch.sigmoid(self.conv(x)).flatten(1))


class OwnWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 3, 3)
        self.scale = nn.Parameter(torch.ones(3, 1))

    def forward(self, x):
        return (self.conv(x) + self.scale).flatten(1)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.out = nn.Conv1d(4, 3, 3), nn.Linear(3 * 38, 2)

    def forward(self, x):
        h = self.conv(x)
        if h.sum() > 0:
            h = torch.relu(h)
        return self.out(h.flatten(1))


class Aliased(nn.Module):
    """``z += 1`` on a name for the layer's output: in place, ``y`` changes too (a trace would record
    ``z = z + 1`` and leave ``y`` alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.out = nn.Conv1d(4, 3, 3), nn.Linear(3 * 38, 2)

    def forward(self, x):
        y = self.conv(x)
        z = y
        z += 1.0
        return self.out((y + z).flatten(1))


class PartlyDetached(nn.Module):
    """A branch computed without gradients: no relevance flows through it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.gate, self.out = nn.Conv1d(4, 3, 3), nn.Conv1d(4, 3, 3), nn.Linear(3 * 38, 2)

    def forward(self, x):
        with torch.no_grad():
            g = torch.relu(self.gate(x))
        return self.out((self.conv(x) + g).flatten(1))


def _count_scopes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    entered = [0]
    enter = Scope.__enter__

    def counted(self):
        entered[0] += 1
        return enter(self)

    monkeypatch.setattr(Scope, "__enter__", counted)
    return entered


@pytest.mark.parametrize("build", [ScaledInForward, OwnWeight, DataDependent, Aliased, PartlyDetached])
def test_what_the_plan_does_not_cover_goes_to_the_general_engine(monkeypatch, build):
    seeded(5)
    model = build().eval()
    x = one_hot_batch(3, 40, seeded(6))
    assert graph_plan_for(model, get("epsilon"), x) is None
    entered = _count_scopes(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sigmoid has no rule: the general engine warns
        L.explain(model, x, 0)
        result = L.explain(model, x, 0)
    assert entered[0] == 2  # the general engine, each call
    torch.testing.assert_close(result.output, model(x))  # the forward as written


def test_hooks_ledgers_and_sources_go_to_the_general_engine():
    model = residual_cnn(channels=4)
    x = one_hot_batch(2, 30, seeded(7))
    assert graph_plan_for(model, get("epsilon"), x) is not None
    handle = model[3].conv1.register_forward_hook(lambda module, args, out: out * 2)
    try:
        assert graph_plan_for(model, get("epsilon"), x) is None
        hooked = L.explain(model, x, 0)
        assert torch.equal(hooked.relevance, L.explain(model, x, 0, strict=True).relevance)
    finally:
        handle.remove()
    assert graph_plan_for(model, get("epsilon"), x) is not None
    ledgered = L.explain(model, x, 0, ledger=True)
    assert ledgered.ledger is not None
    assert torch.allclose(ledgered.relevance, L.explain(model, x, 0).relevance, atol=1e-7)
    read = L.explain(model, x, 0, sources=["3"])
    assert "3" in read.sources


def test_the_model_comes_back_unchanged_also_after_an_error():
    model = _models()["two-branches"].train()
    model.stem.weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    attributes = {n: dict(m.__dict__) for n, m in model.named_modules()}
    x = _inputs(model, 3, seeded(8))
    L.explain(model, x)
    with pytest.raises(RuntimeError):
        L.explain(model, torch.randn(2, 3, 6, 6))  # the flatten no longer fits the head
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for name, module in model.named_modules():
        assert module.__dict__.keys() == attributes[name].keys(), name
        assert module.training, name
    assert not model.stem.weight.requires_grad and model.mix.weight.requires_grad
    assert graph_plan._PLANS.get(model) is not None and graph_plan._PLANS[model][1] is not None


class KeepsActivations(nn.Module):
    """A forward that keeps its hidden activations in an attribute, for the user to look at."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.out = nn.Conv1d(4, 3, 3), nn.Linear(3 * 38, 2)
        self.hidden: torch.Tensor | None = None

    def forward(self, x):
        self.hidden = torch.relu(self.conv(x))
        return self.out(self.hidden.flatten(1))


def test_a_forward_with_effects_beyond_its_output_runs_in_the_general_engine():
    seeded(9)
    model = KeepsActivations().eval()
    x = one_hot_batch(3, 40, seeded(10))
    assert graph_plan_for(model, get("epsilon"), x) is None
    assert model.hidden is None  # the trace's proxy did not stay behind
    L.explain(model, x, 0)
    assert isinstance(model.hidden, torch.Tensor) and model.hidden.shape == (3, 3, 38)


def test_disabled_sends_every_model_to_the_general_engine(monkeypatch):
    model, x = residual_cnn(channels=4), one_hot_batch(2, 30, seeded(11))
    planned = L.explain(model, x, 0)
    entered = _count_scopes(monkeypatch)
    with graph_plan.disabled():
        assert graph_plan_for(model, get("epsilon"), x) is None
        general = L.explain(model, x, 0)
    assert entered[0] == 1
    _same(planned, general)
    assert graph_plan_for(model, get("epsilon"), x) is not None  # and back after the block


@pytest.mark.parametrize("name", ["bpnet-counts", "bpnet-profile"])
def test_bpnet_takes_the_plan_with_its_head_picked_by_the_target(monkeypatch, name):
    """bpnet-lite's BPNet (a forward with a ``X_ctl=None`` argument, shape arithmetic, crops, a mean
    and two outputs): traced with the argument at its default, its counts or profile target picked
    by the explainer's ``output``; the general engine's relevance and hypothetical contributions."""
    from lrp_domains.bench.gpu.models import build
    from lrp_domains.bio import SequenceExplainer

    model, options, length, _ = build(name, tiny=True)
    target = options.pop("target")
    explainer = SequenceExplainer(model, composite="genomics", **options)
    x = one_hot_batch(3, length, seeded(12))
    with graph_plan.disabled():
        general = explainer.explain(x, target=target)
    assert graph_plan_for(explainer.runner, explainer.composite, x) is not None
    _refuse_scopes(monkeypatch)
    planned = explainer.explain(x, target=target)
    assert torch.equal(planned.relevance, general.relevance)
    assert torch.equal(planned.hypothetical, general.hypothetical)


def test_a_plan_goes_with_its_model():
    """The plans are kept weakly per model: nothing in a plan holds the model itself."""
    import gc
    import weakref

    model = _models()["two-branches"]
    x = _inputs(model, 2, seeded(13))
    L.explain(model, x, composite=_composite("genomics"))
    assert graph_plan._PLANS.get(model) is not None
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None
