"""Toy models every test shares. Small, seeded, float64-capable."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F


def seeded(seed: int = 0) -> torch.Generator:
    """Set the global seed (module initialisation uses it) and return a generator for inputs."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def mlp(n_in: int = 10, hidden: int = 16, n_out: int = 3, bias: bool = True, act: type = nn.ReLU) -> nn.Sequential:
    """Two hidden layers."""
    return nn.Sequential(
        nn.Linear(n_in, hidden, bias=bias),
        act(),
        nn.Linear(hidden, hidden, bias=bias),
        act(),
        nn.Linear(hidden, n_out, bias=bias),
    )


def cnn1d(channels: int = 4, n_out: int = 2, batchnorm: bool = True, bias: bool = True) -> nn.Sequential:
    """A one-hot sequence CNN: conv, BatchNorm, ReLU, max-pool, conv, average pool, dense."""
    norm = (lambda c: nn.BatchNorm1d(c)) if batchnorm else (lambda c: nn.Identity())
    return nn.Sequential(
        nn.Conv1d(channels, 8, 5, padding=2, bias=bias),
        norm(8),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(8, 8, 3, padding=1, bias=bias),
        norm(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(8, 8, bias=bias),
        nn.ReLU(),
        nn.Linear(8, n_out, bias=bias),
    )


def cnn2d(n_out: int = 3, batchnorm: bool = True) -> nn.Sequential:
    """An image CNN on (3, 8, 8)."""
    norm = (lambda c: nn.BatchNorm2d(c)) if batchnorm else (lambda c: nn.Identity())
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        norm(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 6, 3, padding=1),
        norm(6),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, n_out),
    )


class ResidualBlock(nn.Module):
    """``relu(x + conv(relu(conv(x))))``, the addition written in forward."""

    def __init__(self, channels: int = 6, bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1, bias=bias)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1, bias=bias)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class ResidualNet(nn.Module):
    """Stem conv, one residual block, pooled dense head."""

    def __init__(self, channels: int = 4, n_out: int = 2, bias: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv1d(channels, 6, 3, padding=1, bias=bias)
        self.block = ResidualBlock(6, bias=bias)
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(6, n_out, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(torch.relu(self.stem(x))))


class SharedLayerNet(nn.Module):
    """The same Linear applied twice: ``out(act(shared(act(shared(inp(x))))))``."""

    def __init__(self, n_in: int = 6, width: int = 8, n_out: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.inp = nn.Linear(n_in, width, bias=bias)
        self.shared = nn.Linear(width, width, bias=bias)
        self.out = nn.Linear(width, n_out, bias=bias)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.inp(x))
        h = self.act(self.shared(h))
        h = self.act(self.shared(h))
        return self.out(h)


class UnsharedLayerNet(nn.Module):
    """SharedLayerNet with the shared layer copied into two modules (same weights)."""

    def __init__(self, shared: SharedLayerNet) -> None:
        super().__init__()
        self.inp = shared.inp
        self.first = shared.shared
        self.second = copy.deepcopy(shared.shared)
        self.out = shared.out
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.inp(x))
        h = self.act(self.first(h))
        h = self.act(self.second(h))
        return self.out(h)


class FunctionalActivationNet(nn.Module):
    """Activations as functions inside forward: ``torch.relu``, ``F.gelu``, ``torch.tanh``."""

    def __init__(self, n_in: int = 6, width: int = 8, n_out: int = 3) -> None:
        super().__init__()
        self.l1 = nn.Linear(n_in, width)
        self.l2 = nn.Linear(width, width)
        self.l3 = nn.Linear(width, width)
        self.l4 = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.l1(x))
        h = F.gelu(self.l2(h))
        h = torch.tanh(self.l3(h))
        return self.l4(h)


class ModuleActivationNet(nn.Module):
    """FunctionalActivationNet with activation modules instead (same parameter names)."""

    def __init__(self, functional: FunctionalActivationNet) -> None:
        super().__init__()
        self.l1, self.l2, self.l3, self.l4 = functional.l1, functional.l2, functional.l3, functional.l4
        self.a1, self.a2, self.a3 = nn.ReLU(), nn.GELU(), nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l4(self.a3(self.l3(self.a2(self.l2(self.a1(self.l1(x)))))))


class UncoveredNet(nn.Module):
    """Contains operations no core rule covers: a LayerNorm, a functional sigmoid, a softmax."""

    def __init__(self, n_in: int = 6, n_out: int = 3) -> None:
        super().__init__()
        self.l1 = nn.Linear(n_in, 8)
        self.norm = nn.LayerNorm(8)
        self.l2 = nn.Linear(8, n_out)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.l1(x))
        h = h * torch.sigmoid(h)
        return self.softmax(self.l2(h))


class RaisingNet(nn.Module):
    """An MLP whose forward raises when asked to (``net.fail = True``), mid-way through."""

    def __init__(self) -> None:
        super().__init__()
        self.body = mlp(6, 8, 8)
        self.head = nn.Linear(8, 2)
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        if self.fail:
            raise RuntimeError("forward failed on purpose")
        return self.head(h)


def randomize_batchnorm(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            c = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                if module.weight is not None:  # affine
                    module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                    module.bias.copy_(torch.randn(c, generator=generator) * 0.2)
    return model


def one_hot_batch(n: int, length: int, generator: torch.Generator | None = None, alphabet: int = 4) -> torch.Tensor:
    """Random one-hot sequences, ``(n, alphabet, length)``."""
    idx = torch.randint(alphabet, (n, length), generator=generator)
    return F.one_hot(idx, alphabet).permute(0, 2, 1).to(torch.get_default_dtype())


EXPRESSION_GENES = [f"G{i}" for i in range(12)]
EXPRESSION_CLASSES = ["A", "B", "C"]


def expression_mlp() -> tuple[nn.Module, list[str], list[str]]:
    """A factory for ``lrp-domains bio genes --model models:expression_mlp``: (model, genes, classes)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    return model, list(EXPRESSION_GENES), list(EXPRESSION_CLASSES)


#: Every per-module hook dict, and the global ones, that explaining must leave as it found them.
MODULE_HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)
GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def snapshot(model: nn.Module) -> dict:
    """Everything about a model that explaining it must not change."""
    module = torch.nn.modules.module
    return {
        "params": {k: (id(v), v.detach().clone(), v.requires_grad) for k, v in model.named_parameters()},
        "buffers": {k: v.clone() for k, v in model.named_buffers()},
        "training": {k: m.training for k, m in model.named_modules()},
        "dicts": {k: {a: id(b) for a, b in vars(m).items() if not a.startswith("_")} for k, m in model.named_modules()},
        "forward": {k: m.__dict__.get("forward") for k, m in model.named_modules()},
        "hooks": {k: {name: dict(getattr(m, name, {})) for name in MODULE_HOOKS} for k, m in model.named_modules()},
        "global": {name: dict(getattr(module, name, {})) for name in GLOBAL_HOOKS},
        "grads": {k: None if v.grad is None else v.grad.clone() for k, v in model.named_parameters()},
    }


def assert_unchanged(before: dict, after: dict) -> None:
    """Parameters (identity, values, requires_grad), buffers, modes, attributes, forwards, hooks and
    gradients as they were."""
    assert before["params"].keys() == after["params"].keys()
    for key, (ident, value, flag) in before["params"].items():
        ident2, value2, flag2 = after["params"][key]
        assert ident == ident2 and flag == flag2, key
        assert torch.equal(value, value2), key
    for key, value in before["buffers"].items():
        assert torch.equal(value, after["buffers"][key]), key
    for name in ("training", "dicts", "forward", "hooks", "global"):
        assert before[name] == after[name], name
    for key, grad in before["grads"].items():
        other = after["grads"][key]
        assert (grad is None and other is None) or torch.equal(grad, other), key
