"""The traced graph plan against the general engine on randomly built models (issue #27).

Each model is drawn from a seeded grammar of what sequence CNNs write: convolutions with and
without a BatchNorm after them, a BatchNorm on its own, the activations every composite has a rule
for (as modules, in-place modules and ``torch.relu``/``F.leaky_relu`` calls in ``forward``),
residual adds (``h + b``, and ``add_`` on a copy of a layer's output), concatenations, crops,
chunks added back, max and average pooling (modules and calls), nearest upsampling, transposed
convolutions, a Linear over the channels of a transposed tensor, dropout, flips and zero padding;
then a head (flatten, a view by the batch size, mean, sum or a global max pool, a dense layer with
or without a BatchNorm, the output layer); about a quarter are written for channels last (the
input permuted before the first convolution, which takes the input-layer rule). Every such model
is one the plan must take (its first layer is a convolution on the input, nothing outside the
plan's set), and each composite's relevance, output, delta and hypothetical contributions must
equal the general engine's bit for bit (strict mode runs the general engine; the scope is refused
once the plan is made, so the plan is what ran)."""

from __future__ import annotations

import random

import pytest
import torch
from models import one_hot_batch, seeded
from test_graph_plan import COMPOSITES, _composite, _refuse_scopes, _same
from torch import nn
from torch.nn import functional as F

import lrp_domains as L
from lrp_domains.core.engine.graph_plan import graph_plan_for

ACTIVATIONS = (
    lambda: nn.ReLU(),
    lambda: nn.ReLU(inplace=True),
    lambda: nn.LeakyReLU(0.1),
    lambda: nn.GELU(),
    lambda: nn.ELU(),
    lambda: nn.Tanh(),
    lambda: nn.SiLU(),
    lambda: nn.Softplus(),
)


def _norm(channels: int, dims: int = 1) -> nn.Module:
    norm = nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
    norm.running_mean.uniform_(-0.3, 0.3)
    norm.running_var.uniform_(0.5, 1.5)
    norm.weight.data.uniform_(0.5, 1.5)
    norm.bias.data.uniform_(-0.2, 0.2)
    return norm


class RandomCNN(nn.Module):
    """A 1-D CNN whose ``forward`` runs ``self.program``: one ``(operation, module names)`` per step."""

    def __init__(self, rng: random.Random, length: int) -> None:
        super().__init__()
        self.program: list[tuple[str, tuple[str, ...]]] = []
        self.layers = nn.ModuleDict()
        #: Written for channels last: ``(N, L, 4)`` in, permuted before the first convolution.
        self.channels_last = rng.random() < 0.25
        channels = rng.choice((3, 5, 8))
        self._add("module", nn.Conv1d(4, channels, rng.choice((1, 3, 5)), padding="same"))
        for _ in range(rng.randint(3, 9)):
            kind = rng.choice(
                ("conv", "conv-norm", "norm", "act", "act-call", "residual", "residual-inplace", "cat", "pool", "crop")
                + ("chunk", "dense-channels", "dropout", "flip", "pad", "upsample", "transposed")
            )
            if kind in ("conv", "conv-norm"):
                out = rng.choice((3, 5, 8))
                names = [self._add(None, nn.Conv1d(channels, out, rng.choice((1, 3, 5)), padding="same"))]
                if kind == "conv-norm":
                    names.append(self._add(None, _norm(out)))
                self.program.append(("modules", tuple(names)))
                channels = out
            elif kind == "norm":
                self._add("module", _norm(channels))
            elif kind == "act":
                self._add("module", rng.choice(ACTIVATIONS)())
            elif kind == "act-call":
                self.program.append((rng.choice(("torch.relu", "F.relu", "F.leaky_relu")), ()))
            elif kind in ("residual", "residual-inplace"):
                conv = self._add(None, nn.Conv1d(channels, channels, 3, padding=1))
                act = self._add(None, nn.ReLU())
                self.program.append((kind, (conv, act)))
            elif kind == "cat":
                out = rng.choice((2, 4))
                self.program.append(("cat", (self._add(None, nn.Conv1d(channels, out, 3, padding=1)),)))
                channels += out
            elif kind == "pool" and length >= 8:
                pool = rng.choice(("max", "avg", "max-call", "avg-call"))
                if pool in ("max-call", "avg-call"):
                    self.program.append(("F.max_pool1d" if pool == "max-call" else "F.avg_pool1d", ()))
                else:
                    self._add("module", nn.MaxPool1d(2) if pool == "max" else nn.AvgPool1d(2))
                length //= 2
            elif kind == "crop" and length >= 8:
                self.program.append(("crop", ()))
                length -= 2
            elif kind == "chunk" and channels % 2 == 0:
                self.program.append(("chunk", ()))
                channels //= 2
            elif kind == "dense-channels":
                out = rng.choice((3, 6))
                self.program.append(("dense-channels", (self._add(None, nn.Linear(channels, out)),)))
                channels = out
            elif kind == "flip":
                self.program.append(("flip", ()))
            elif kind == "pad":
                self.program.append(("pad", ()))
                length += 2
            elif kind == "upsample" and length <= 24:
                self.program.append(("upsample", ()))
                length *= 2
            elif kind == "transposed" and length <= 24:
                out = rng.choice((3, 5))
                self._add("module", nn.ConvTranspose1d(channels, out, 2, stride=2))
                channels, length = out, length * 2
            elif kind == "dropout":
                self._add("module", rng.choice((nn.Dropout(0.3), nn.Identity())))
        head = rng.choice(("flatten", "view", "mean", "sum", "global-max"))
        features = channels * length if head in ("flatten", "view") else channels
        if head == "global-max":
            self._add("module", nn.AdaptiveMaxPool1d(1))
            self._add("module", nn.Flatten())
        else:
            self.program.append((head, ()))
        hidden = rng.choice((4, 7))
        self._add("module", nn.Linear(features, hidden))
        if rng.random() < 0.5:
            self._add("module", _norm(hidden))
        self._add("module", rng.choice(ACTIVATIONS)())
        self._add("module", nn.Linear(hidden, 3))
        self.eval()

    def _add(self, operation: str | None, module: nn.Module) -> str:
        name = f"m{len(self.layers)}"
        self.layers[name] = module
        if operation is not None:
            self.program.append((operation, (name,)))
        return name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.permute(0, 2, 1) if self.channels_last else x
        for operation, names in self.program:
            layers = [self.layers[name] for name in names]
            if operation in ("module", "modules"):
                for layer in layers:
                    h = layer(h)
            elif operation == "torch.relu":
                h = torch.relu(h)
            elif operation == "F.relu":
                h = F.relu(h)
            elif operation == "F.leaky_relu":
                h = F.leaky_relu(h, 0.2)
            elif operation == "residual":
                h = h + layers[1](layers[0](h))
            elif operation == "residual-inplace":
                h = layers[1](layers[0](h).clone().add_(h))  # a layer's output is saved by layer rules
            elif operation == "cat":
                h = torch.cat([h, layers[0](h)], dim=1)
            elif operation == "F.max_pool1d":
                h = F.max_pool1d(h, 2)
            elif operation == "F.avg_pool1d":
                h = F.avg_pool1d(h, 2)
            elif operation == "upsample":
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            elif operation == "crop":
                h = h[:, :, 1:-1]
            elif operation == "chunk":
                first, second = h.chunk(2, dim=1)
                h = first + second
            elif operation == "dense-channels":
                h = layers[0](h.transpose(1, 2)).transpose(1, 2)
            elif operation == "flip":
                h = h.flip(-1)
            elif operation == "pad":
                h = F.pad(h, (1, 1))
            elif operation == "flatten":
                h = h.flatten(1)
            elif operation == "view":
                h = h.contiguous().view(h.size(0), -1)
            elif operation == "sum":
                h = h.sum(dim=-1)
            elif operation == "mean":
                h = h.mean(dim=-1)
        return h


SEEDS = range(32)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_models_take_the_plan_with_the_general_engines_relevance(monkeypatch, seed):
    rng = random.Random(seed)
    seeded(seed)
    length = rng.choice((12, 20))
    model = RandomCNN(rng, length)
    x = one_hot_batch(3, length, seeded(100 + seed))
    if model.channels_last:
        x = x.transpose(1, 2).contiguous()
    for name in rng.sample(COMPOSITES, 3):
        rules = _composite(name)
        general = L.explain(model, x, None, rules, strict=True, hypothetical=True, batch_size=2)
        assert graph_plan_for(model, rules, x) is not None, (name, model.program)
        with monkeypatch.context() as patched:
            _refuse_scopes(patched)
            _same(L.explain(model, x, None, rules, hypothetical=True, batch_size=2), general)


class DenseOverChannels(nn.Module):
    """A Linear over the channels of a transposed tensor: ``matmul`` folds a batch of one into a
    single product only where the weight records no gradient (found by the random models)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.dense, self.out = nn.Conv1d(4, 5, 3, padding=1), nn.Linear(5, 3), nn.Linear(36, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dense(self.conv(x).transpose(1, 2)).transpose(1, 2)
        return self.out(h.flatten(1))


@pytest.mark.parametrize("name", ["lrp-0", "epsilon"])
def test_a_batch_of_one_through_a_dense_layer_over_channels_is_bit_for_bit(monkeypatch, name):
    seeded(0)
    model, rules = DenseOverChannels().eval(), _composite(name)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    x = one_hot_batch(1, 12, seeded(1))
    general = L.explain(model, x, None, rules, strict=True)
    assert graph_plan_for(model, rules, x) is not None
    with monkeypatch.context() as patched:
        _refuse_scopes(patched)
        _same(L.explain(model, x, None, rules), general)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
