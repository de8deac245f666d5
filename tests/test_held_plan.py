"""An MLP held by a module (``self.net = nn.Sequential(...)``, ``return self.net(x)``) takes the
direct path, checked on every call: the relevance, hypothetical contributions and ledger equal the
general engine's (strict mode runs the general engine), and any forward that does more than apply
the block to its input goes to the general engine with the same result (issue #27)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.core.composite import Composite
from lrp_domains.core.composites import get
from lrp_domains.core.engine import sequential
from lrp_domains.core.engine.sequential import held_plan_for
from lrp_domains.core.rules import Epsilon, Gamma, ZBox, ZPlus


class Held(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Flattens(Held):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class Scales(Held):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 2.0


class InPlace(Held):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        out.mul_(2.0)
        return out


class Twice(Held):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.net(x)
        return self.net(x)


class Fails(Held):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.net(x)
        raise RuntimeError("broken after the block")


def _model(cls=Held, seed=0):
    torch.manual_seed(seed)
    return cls().double().eval()


COMPOSITES = {
    "epsilon": lambda: get("epsilon"),
    "zplus": lambda: get("zplus"),
    "lrp-0": lambda: Composite({nn.Linear: Epsilon(0.0)}),
    "by name": lambda: Composite({nn.Linear: Epsilon(), "net.2": ZPlus()}),
    "zbox first, gamma, epsilon last": lambda: Composite(
        {nn.Linear: Gamma(0.25)}, first=ZBox(-3.0, 3.0), last=Epsilon()
    ),
}


@pytest.mark.parametrize("name", list(COMPOSITES))
@pytest.mark.parametrize("target", [None, 1, "callable"])
def test_the_held_mlp_equals_the_general_engine(name, target):
    model = _model()
    composite = COMPOSITES[name]()
    assert held_plan_for(model, composite) is not None
    x = torch.randn(6, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    chosen = (lambda out: out[:, 1] - out[:, 0]) if target == "callable" else target
    fast = L.explain(model, x, chosen, composite, hypothetical=True, ledger=True, check_delta=False)
    general = L.explain(model, x, chosen, composite, hypothetical=True, ledger=True, check_delta=False, strict=True)
    for field in ("relevance", "output", "explained", "delta", "hypothetical"):
        torch.testing.assert_close(getattr(fast, field), getattr(general, field), rtol=1e-10, atol=1e-12, msg=field)
    a = fast.ledger.sort_values(["example", "module"]).reset_index(drop=True)
    b = general.ledger.sort_values(["example", "module"]).reset_index(drop=True)
    assert a["module"].tolist() == b["module"].tolist()  # the same rows, named as in the model
    torch.testing.assert_close(torch.tensor(a["absorbed"].to_numpy()), torch.tensor(b["absorbed"].to_numpy()))


@pytest.mark.parametrize("cls", [Flattens, Scales, InPlace, Twice])
def test_a_forward_doing_more_goes_to_the_general_engine(cls):
    model = _model(cls)
    composite = get("epsilon")
    held = held_plan_for(model, composite)
    assert held is not None and not held.refused
    x = torch.randn(5, 3, 4, dtype=torch.float64) if cls is Flattens else torch.randn(5, 12, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # InPlace's mul_ has no rule: the general engine says so
        result = L.explain(model, x, 1, composite, check_delta=False)
        # an output function is something only the general engine takes
        expected = L.explain(model, x, 1, composite, check_delta=False, output=lambda raw, batch: raw)
    torch.testing.assert_close(result.relevance, expected.relevance, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(result.explained, expected.explained, rtol=1e-10, atol=1e-12)
    assert held.refused and held_plan_for(model, composite) is None  # not tried again


def test_the_relevance_is_the_held_mlp_s_own_not_a_copy():
    # the check is real: a Scales model explained as if it were Held would explain half the output
    model = _model(Scales)
    x = torch.randn(4, 12, dtype=torch.float64)
    result = L.explain(model, x, 0, "epsilon", check_delta=False)
    torch.testing.assert_close(result.explained, 2.0 * model.net(x)[:, 0])


def test_the_model_is_unchanged_also_after_an_error():
    for cls in (Held, Fails):
        model = _model(cls)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        flags = [p.requires_grad for p in model.parameters()]
        model.train()
        x = torch.randn(3, 12, dtype=torch.float64)
        if cls is Fails:
            with pytest.raises(RuntimeError, match="broken after the block"):
                L.explain(model, x, 0, "epsilon")
        else:
            L.explain(model, x, 0, "epsilon", check_delta=False)
        assert "forward" not in model.__dict__ and "forward" not in model.net.__dict__
        assert all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_what_the_general_engine_would_do_differently_keeps_it():
    model = _model()
    assert held_plan_for(model, Composite({nn.Linear: Epsilon(), Held: Epsilon()})) is None  # a rule for it all
    hook = model.net[0].register_forward_hook(lambda *args: None)
    assert held_plan_for(model, get("epsilon")) is None
    hook.remove()
    assert held_plan_for(model, get("epsilon")) is not None
    model.extra = nn.Linear(3, 3).double()  # the model's last affine layer is no longer the block's
    assert held_plan_for(model, Composite({nn.Linear: Gamma(0.25)}, last=Epsilon())) is None
    assert held_plan_for(model, get("epsilon")) is not None  # without a last rule it does not matter
    assert sequential.plan_for(model, get("epsilon")) is None  # not a bare Sequential
