"""The BatchNorms of one model are merged together, once per call, with operations over lists of
tensors (:func:`lrp_domains.core.canonizers._merge_many`): the same parameters, bit for bit, as
merging pair by pair, the same relevance, and fewer operations per call."""

from __future__ import annotations

import models as M
import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.bench.measure import count_operations
from lrp_domains.core import canonizers
from lrp_domains.core.canonizers import MergeBatchNorm


def _norm(features: int, generator: torch.Generator, affine: bool = True, eps: float = 1e-5) -> nn.BatchNorm1d:
    return M.randomize_batchnorm(nn.BatchNorm1d(features, affine=affine, eps=eps), generator).eval()


def _pairs() -> list[tuple[nn.Module, nn.BatchNorm1d]]:
    g = M.seeded(0)
    return [
        (nn.Conv1d(4, 6, 5), _norm(6, g)),  # affine, layer bias
        (nn.Conv1d(6, 6, 3, bias=False), _norm(6, g, eps=1e-3)),  # no layer bias, another epsilon
        (nn.Linear(5, 3), _norm(3, g)),
        (nn.Conv1d(6, 6, 3), _norm(6, g, affine=False)),  # not affine: merged on its own
        (nn.Linear(5, 3).double(), _norm(3, g).double()),  # another dtype: its own group
        (nn.Linear(5, 3).double(), _norm(3, g)),  # a norm in another dtype than its layer
        (nn.Conv1d(3, 4, 3, bias=False), _norm(4, g)),
    ]


def test_merged_together_are_the_pairs_merged_one_by_one_bit_for_bit():
    pairs = _pairs()
    together = canonizers._merge_many(pairs)
    assert len(together) == len(pairs)
    for (layer, norm), (weight, bias) in zip(pairs, together):
        one_weight, one_bias = MergeBatchNorm._merge(layer, norm)
        assert weight.dtype == one_weight.dtype and bias.dtype == one_bias.dtype
        assert torch.equal(weight, one_weight) and torch.equal(bias, one_bias)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.norm1 = nn.Conv1d(8, 8, 3, padding=1), nn.BatchNorm1d(8)
        self.conv2, self.norm2 = nn.Conv1d(8, 8, 3, padding=1, bias=False), nn.BatchNorm1d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x))))))


def _model() -> nn.Module:
    M.seeded(1)
    model = nn.Sequential(
        nn.Conv1d(4, 8, 5, padding=2),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        _Residual(),
        _Residual(),
        nn.Flatten(),
        nn.Linear(8 * 20, 2),
    )
    return M.randomize_batchnorm(model, torch.Generator().manual_seed(2)).eval()


@pytest.mark.parametrize("composite", ["epsilon", "epsilon-gamma-box"])
def test_the_relevance_is_that_of_merging_pair_by_pair_with_fewer_operations(composite, monkeypatch):
    model, x = _model(), M.one_hot_batch(2, 20, torch.Generator().manual_seed(3))
    rules = L.composites.get(composite, **({"low": 0.0, "high": 1.0} if composite != "epsilon" else {}))

    def explain() -> torch.Tensor:
        return L.explain(model, x, 0, rules, check_delta=False).relevance

    relevance = explain()
    together = count_operations(explain)
    monkeypatch.setattr(
        canonizers, "_merge_from", lambda pairs, sources: [MergeBatchNorm._merge(*pair) for pair in pairs]
    )
    assert torch.equal(explain(), relevance)
    one_by_one = count_operations(explain)
    # five pairs: about seven operations each one by one, about nine for all of them together
    assert one_by_one - together >= 15
