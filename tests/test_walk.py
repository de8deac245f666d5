"""The engine's own module walks give what ``nn.Module``'s generators give: the same modules, names
and order (shared modules once, ``None`` children skipped), and the first parameter's device and
first floating-point parameter's dtype."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from lrp_domains.core.engine import walk


def _shared() -> nn.Module:
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), nn.Sequential(shared, nn.Sequential()), shared)
    model.register_module("nothing", None)
    return model


def _bert() -> nn.Module:
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24)
    return BertForSequenceClassification(config)


@pytest.mark.parametrize("make", [_shared, _bert, nn.ReLU])
def test_the_walks_are_the_generators_of_nn_module(make):
    model = make()
    assert walk.named_modules(model) == list(model.named_modules())
    assert list(walk.modules(model)) == list(model.modules())


class _Counts(nn.Module):
    """An integer parameter first, then a float64 one inside a child."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False)
        self.child = nn.Linear(2, 2).double()


class _Buffers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.zeros(3, dtype=torch.float16))


def _expected(model: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    tensors = list(model.parameters()) or list(model.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    floating = [p.dtype for p in model.parameters() if p.is_floating_point()]
    return device, floating[0] if floating else None


@pytest.mark.parametrize("make", [_shared, _bert, _Counts, _Buffers, nn.ReLU])
def test_device_and_dtype_are_those_of_the_first_parameters(make):
    model = make()
    assert walk.device_and_dtype(model) == _expected(model)
