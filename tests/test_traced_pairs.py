"""BatchNorms merged into the layer before them in any model shape, found from one forward's
autograd graph (issue #27): the pairs found are the ones a reader sees in the code, the relevance
equals naming those pairs by hand, and a layer whose output goes anywhere else is left alone."""

from __future__ import annotations

import copy as copy_module

import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.core.canonizers import MergeBatchNorm
from lrp_domains.core.composites import get
from lrp_domains.core.traced_pairs import trace_pairs


def _norm(channels: int) -> nn.BatchNorm1d:
    norm = nn.BatchNorm1d(channels)
    with torch.no_grad():
        norm.running_mean.uniform_(-0.3, 0.3)
        norm.running_var.uniform_(0.5, 1.5)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.2, 0.2)
    return norm


class Residual(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv1, self.norm1 = nn.Conv1d(c, c, 3, padding=1), _norm(c)
        self.conv2, self.norm2 = nn.Conv1d(c, c, 3, padding=1), _norm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x))))))


class Net(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem, self.norm = nn.Conv1d(4, c, 5, padding=2), _norm(c)
        self.block = Residual(c)
        self.head = nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(torch.relu(self.norm(self.stem(x))))
        return self.head(h.amax(-1))


class PreNormSkip(nn.Module):
    """The conv's output feeds the norm and, unnormalised, a skip connection: not mergeable."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv, self.norm, self.head = nn.Conv1d(4, c, 3, padding=1), _norm(c), nn.Linear(c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.head((torch.relu(self.norm(h)) + h).mean(-1))


class SharedConv(nn.Module):
    """One conv called twice, only one call followed by the norm: not mergeable."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.inp = nn.Conv1d(4, c, 3, padding=1)
        self.conv, self.norm, self.head = nn.Conv1d(c, c, 3, padding=1), _norm(c), nn.Linear(c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        return self.head((torch.relu(self.norm(self.conv(h))) + self.conv(h)).mean(-1))


def _data(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return nn.functional.one_hot(torch.randint(4, (5, 30), generator=g), 4).permute(0, 2, 1).double()


def _named(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """The pairs kept for ``model`` (traced already: no forward runs), by module name."""
    names = {id(m): n for n, m in model.named_modules()}
    return sorted((names[id(a)], names[id(b)]) for a, b in trace_pairs(model, x))


def _by_hand(pairs: list[tuple[str, str]]):
    composite = get("epsilon")
    composite.canonizers = [MergeBatchNorm(pairs=pairs, traced=False)]
    return composite


def test_pairs_in_a_residual_model_are_found_and_merge_as_named_by_hand():
    torch.manual_seed(0)
    model, x = Net().double().eval(), _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = L.explain(model, x, composite="epsilon")
    expected = [("block.conv1", "block.norm1"), ("block.conv2", "block.norm2"), ("stem", "norm")]
    assert _named(model, x) == expected
    by_hand = L.explain(model, x, composite=_by_hand(expected))
    torch.testing.assert_close(result.relevance, by_hand.relevance, rtol=1e-12, atol=1e-14)
    unmerged = L.explain(model, x, composite=_by_hand([]))
    assert not torch.allclose(unmerged.relevance, result.relevance)  # the merge changes the rule's layers
    # the same values are explained: merging changes no value the model computes
    torch.testing.assert_close(result.output, model(x))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all("forward" not in vars(m) for m in model.modules())


@pytest.mark.parametrize("cls", [PreNormSkip, SharedConv])
def test_a_layer_whose_output_goes_elsewhere_is_not_merged(cls):
    torch.manual_seed(1)
    model, x = cls().double().eval(), _data(1)
    result = L.explain(model, x, composite="epsilon")
    assert _named(model, x) == []
    unmerged = L.explain(model, x, composite=_by_hand([]))
    torch.testing.assert_close(result.relevance, unmerged.relevance, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(result.output, model(x))


def test_traced_once_per_model_and_again_when_its_modules_change():
    torch.manual_seed(2)
    model, x = Net().double().eval(), _data(2)
    calls = []
    model.stem.register_forward_hook(lambda *a: calls.append(1))
    first = trace_pairs(model, x)
    assert trace_pairs(model, x) is first and len(first) == 3
    assert len(calls) == 1
    model.block = Residual().double().eval()
    again = trace_pairs(model, x)
    assert len(calls) == 2 and len(again) == 3 and again != first


def test_a_scope_merges_only_the_pairs_handed_to_it():
    """The traced pairs are the caller's to give: a scope entered by hand merges the Sequential
    pairs only, whatever an earlier explanation traced for the same model."""
    torch.manual_seed(4)
    model, x = Net().double().eval(), _data(4)
    L.explain(model, x, composite="epsilon")  # traces and keeps the pairs
    with get("epsilon").context(model) as scope:
        assert scope._merged == {}  # Net holds no Sequential pair
    handed = get("epsilon").context(model)
    handed.traced_pairs = trace_pairs(model, x)
    with handed:
        assert len(handed._merged) == 3


def test_latent_relevance_uses_the_same_merged_layers():
    from lrp_domains.core.latent import explain_concepts

    torch.manual_seed(3)
    model, x = Net().double().eval(), _data(3)
    concepts = explain_concepts(model, x, layer="block", composite="epsilon")  # traced here first
    full = L.explain(model, x, composite="epsilon")
    torch.testing.assert_close(concepts.relevance, full.relevance, rtol=1e-10, atol=1e-12)
    assert len(_named(model, x)) == 3


def test_merged_parameters_follow_every_change_to_their_tensors():
    # the merge is kept per layer between calls; every way a user changes a weight or a running
    # statistic must make it again: compare with the merge computed from scratch each time
    torch.manual_seed(4)
    model = Net().double().eval()
    x = torch.randn(3, 4, 20, dtype=torch.float64)

    def fresh(layer, norm):
        return MergeBatchNorm._merge(layer, norm)

    def check():
        for layer, norm in ((model.stem, model.norm), (model.block.conv1, model.block.norm1)):
            kept = MergeBatchNorm.merged_parameters(layer, norm)
            for a, b in zip(kept, fresh(layer, norm)):
                assert torch.equal(a, b)

    check()
    first = L.explain(model, x, 1, "epsilon", check_delta=False).relevance
    with torch.no_grad():
        model.stem.weight.mul_(1.5)  # in place (an optimizer step)
        model.norm.running_var.add_(0.25)  # a running statistic
    check()
    model.block.conv1.bias = nn.Parameter(torch.randn(8, dtype=torch.float64))  # replaced
    check()
    model.load_state_dict({k: v.clone() * 0.9 for k, v in model.state_dict().items()})
    check()
    model.norm.eps = 1e-2
    check()
    second = L.explain(model, x, 1, "epsilon", check_delta=False).relevance
    copy = copy_module.deepcopy(model)  # new layers: nothing kept for them
    expected = L.explain(copy, x, 1, "epsilon", check_delta=False)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second, expected.relevance, rtol=1e-12, atol=1e-12)
    model.float()  # a dtype change makes new tensors
    check()
