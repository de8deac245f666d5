"""A model written for channels last (``(N, L, 4)`` one-hot, permuted to ``(N, 4, L)`` in its
``forward`` before the first convolution, as models ported from Keras are) gets the composite's
input-layer rule on that convolution, as the same layers taking ``(N, 4, L)`` directly do.

Before, the permuted view was not taken for the model's input: the first layer silently got the
rule of its type (gamma under ``genomics``) instead of z-box, zero-valued bases got no relevance
and the hypothetical contributions differed. The expectation here is independent of the
permutation: the same layers explained on the same bases laid out channels first."""

from __future__ import annotations

import warnings

import pytest
import torch
from models import one_hot_batch, seeded
from torch import nn

import lrp_domains as L
from lrp_domains.core.composite import Composite
from lrp_domains.core.composites import get
from lrp_domains.core.rules import Epsilon, Flat, Gamma, WSquare


class ChannelsFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 5, padding=2)
        self.mix = nn.Conv1d(6, 6, 3, padding=1)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.mix(torch.relu(self.conv(x))))
        return self.out(h.amax(-1))


class ChannelsLast(ChannelsFirst):
    """The same layers, for ``(N, L, 4)`` input."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 1) if self.how == "permute" else x.transpose(1, 2))


def _composite(name: str) -> Composite:
    if name == "genomics":
        from lrp_domains.bio.composites import genomics

        return genomics()
    if name == "epsilon-gamma-box":
        return get(name, low=0.0, high=1.0)
    if name == "flat first":
        return Composite({nn.Conv1d: Gamma(0.25), nn.Linear: Epsilon()}, first=Flat())
    return Composite({nn.Conv1d: Epsilon(), nn.Linear: Epsilon()}, first=WSquare())


@pytest.mark.parametrize("how", ["permute", "transpose"])
@pytest.mark.parametrize("name", ["genomics", "epsilon-gamma-box", "flat first", "w-square first"])
def test_a_channels_last_model_gets_the_input_layer_rule(how, name):
    seeded(0)
    last = ChannelsLast(how).eval()
    first = ChannelsFirst().eval()
    first.load_state_dict({k: v for k, v in last.state_dict().items()})
    x = one_hot_batch(3, 20, seeded(1))  # (N, 4, L)
    rules = _composite(name)
    expected = L.explain(first, x, 1, rules, hypothetical=True, check_delta=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = L.explain(last, x.transpose(1, 2).contiguous(), 1, rules, hypothetical=True, check_delta=False)
    assert not [w for w in caught if "tracked model input" in str(w.message)]
    scale = expected.relevance.abs().max()
    torch.testing.assert_close(got.relevance.transpose(1, 2), expected.relevance, rtol=0, atol=1e-6 * scale)
    torch.testing.assert_close(got.hypothetical.transpose(1, 2), expected.hypothetical, rtol=0, atol=1e-6 * scale)
    torch.testing.assert_close(got.explained, expected.explained)
    # the input-layer rule gives zero-valued bases relevance (gamma would give them none)
    if name != "w-square first":
        assert got.relevance[x.transpose(1, 2) == 0].abs().sum() > 0


@pytest.mark.parametrize("name", ["genomics", "flat first"])
def test_a_crop_of_the_input_gets_the_input_layer_rule_and_the_cropped_bases_nothing(name):
    """A model that trims its input's flanks before the first convolution: that convolution takes
    the input-layer rule (before: silently its type's rule), the bases it sees get what the same
    layers give the trimmed input, the trimmed ones nothing."""

    class Trims(ChannelsFirst):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.permute(0, 2, 1)[:, :, 2:-3])

    seeded(0)
    model = Trims().eval()
    same = ChannelsFirst().eval()
    same.load_state_dict(model.state_dict())
    x = one_hot_batch(3, 20, seeded(2))  # (N, 4, L)
    rules = _composite(name)
    expected = L.explain(same, x[:, :, 2:-3].contiguous(), 0, rules, hypothetical=True, check_delta=False)
    got = L.explain(model, x.transpose(1, 2).contiguous(), 0, rules, hypothetical=True, check_delta=False)
    relevance, hypothetical = got.relevance.transpose(1, 2), got.hypothetical.transpose(1, 2)
    scale = expected.relevance.abs().max()
    torch.testing.assert_close(relevance[:, :, 2:-3], expected.relevance, rtol=0, atol=1e-6 * scale)
    torch.testing.assert_close(hypothetical[:, :, 2:-3], expected.hypothetical, rtol=0, atol=1e-6 * scale)
    assert relevance[:, :, :2].abs().sum() == 0 and relevance[:, :, -3:].abs().sum() == 0
    assert hypothetical[:, :, :2].abs().sum() == 0 and hypothetical[:, :, -3:].abs().sum() == 0
    assert relevance[:, :, 2:-3][x[:, :, 2:-3] == 0].abs().sum() > 0  # the input-layer rule's mark


def test_views_that_repeat_entries_are_not_the_input():
    from lrp_domains.core.engine.tracking import InputTracker

    tracker = InputTracker()
    (leaf,) = tracker.track([torch.zeros(2, 4, 10)])
    assert tracker.sees_input(leaf.permute(0, 2, 1)) and tracker.sees_input(leaf[:, :, 3:7])
    assert tracker.sees_input(leaf[:, ::2])
    assert not tracker.sees_input(leaf[:, :1].expand(2, 4, 10))  # one channel repeated four times
    assert not tracker.sees_input(leaf.unfold(2, 3, 1))  # windows share entries
    assert not tracker.sees_input(leaf[:, :, 3:7].clone())  # a copy is not a view of the input


def test_the_ledger_sees_the_same_relevance():
    seeded(0)
    model = ChannelsLast("permute").eval()
    x = one_hot_batch(2, 16, seeded(3)).transpose(1, 2).contiguous()
    rules = _composite("genomics")
    plain = L.explain(model, x, 1, rules, hypothetical=True, check_delta=False)
    ledgered = L.explain(model, x, 1, rules, hypothetical=True, check_delta=False, ledger=True)
    torch.testing.assert_close(ledgered.relevance, plain.relevance)
    torch.testing.assert_close(ledgered.hypothetical, plain.hypothetical)
    assert ledgered.ledger is not None and len(ledgered.ledger) > 0


@pytest.mark.parametrize("how", ["permute", "transpose"])
def test_the_traced_graph_plan_takes_a_channels_last_model_bit_for_bit(monkeypatch, how):
    from test_graph_plan import _refuse_scopes, _same

    from lrp_domains.core.engine.graph_plan import graph_plan_for

    seeded(0)
    model = ChannelsLast(how).eval()
    x = one_hot_batch(3, 20, seeded(4)).transpose(1, 2).contiguous()
    rules = _composite("genomics")
    general = L.explain(model, x, None, rules, strict=True, hypothetical=True, batch_size=2, check_delta=False)
    assert graph_plan_for(model, rules, x) is not None
    with monkeypatch.context() as patched:
        _refuse_scopes(patched)
        _same(L.explain(model, x, None, rules, hypothetical=True, batch_size=2, check_delta=False), general)


@pytest.mark.parametrize("name", ["genomics", "flat first"])
def test_a_channels_last_batch_given_as_a_transposed_view(name):
    """The batch itself a view in another order (``x_ncl.transpose(1, 2)``, not made contiguous):
    the model's permute gives back a contiguous tensor that is not a reshape of the input; the
    rule's relevance still reaches each entry in the input's own order."""
    seeded(0)
    model = ChannelsLast("permute").eval()
    x = one_hot_batch(3, 20, seeded(5)).contiguous()  # (N, 4, L)
    rules = _composite(name)
    expected = L.explain(model, x.transpose(1, 2).contiguous(), 1, rules, hypothetical=True, check_delta=False)
    got = L.explain(model, x.transpose(1, 2), 1, rules, hypothetical=True, check_delta=False)
    scale = expected.relevance.abs().max()
    torch.testing.assert_close(got.relevance, expected.relevance, rtol=0, atol=1e-6 * scale)
    torch.testing.assert_close(got.hypothetical, expected.hypothetical, rtol=0, atol=1e-6 * scale)
