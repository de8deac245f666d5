"""What a composite must compute at least: multiply-accumulates (MACs) of its rules' equations,
next to a gradient's, so a measured time can be read against its own limit.

Counted per affine layer (Linear, Conv) from the layer's forward cost ``F`` (MACs of ``W x`` for
the batch); elementwise work is not counted (it is linear in the activations, the products are
linear in activations x fan-in):

================================  =====  ======================================================
rule                              MACs   why
================================  =====  ======================================================
gradient, Epsilon, LRP-0, Pass    2 F    the forward ``W x`` and one transposed product
ZPlus, input >= 0                 3 F    + ``W+ x`` for the denominator
ZPlus, input of both signs        5 F    ``W+ x+``, ``W- x-``; ``W+^T s`` and ``W-^T s``
AlphaBeta or Gamma, input >= 0    4 F    + ``W+ x``; ``W+^T s+`` and ``W-^T s-`` (sign-aware)
AlphaBeta or Gamma, both signs    9 F    four modified forwards, four transposed products
ZBox (first layer)                3 F    ``W+ low`` and ``W- high`` are one example each (free);
                                         ``W^T s`` and ``W+^T s``
WSquare, Flat                     2 F    the forward and ``(W^2)^T s`` (the ``W^2 1`` is free)
================================  =====  ======================================================

Each rule declares its number (:meth:`lrp_domains.core.rules.Rule.macs`, from its ``cost``), so
this table is read off the rules; a layer without a rule costs a gradient's 2 F, and a rule that
declares no cost is a TypeError naming it. A BatchNorm merged into the layer before it costs
nothing; an unmerged one is elementwise. The bound of a composite is the sum over layers divided
by the gradient's ``2 F_total``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lrp_domains.core.composite import Composite
from lrp_domains.core.layers import affine_ops

__all__ = ["layer_macs", "lower_bound"]


def _macs(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups
        for size in module.kernel_size:
            per_output *= size
        return out.numel() * per_output
    return 0


def layer_macs(model: nn.Module, inputs: torch.Tensor) -> list[dict[str, Any]]:
    """Per affine layer, in call order: name, module, forward MACs ``F`` for ``inputs``, and
    whether its input was non-negative."""
    found: list[dict[str, Any]] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and affine_ops(module) is not None:

            def hook(mod: nn.Module, args: tuple, out: torch.Tensor, name: str = name) -> None:
                x = args[0]
                found.append(
                    {"name": name, "module": mod, "macs": _macs(mod, x, out), "nonnegative": bool(x.min() >= 0)}
                )

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return found


def _factor(rule: Any, nonnegative: bool) -> int:
    """The rule's own cost in units of the layer's forward; a gradient's 2 without a rule."""
    if rule is None:
        return 2
    macs = getattr(rule, "macs", None)
    if macs is None:
        raise TypeError(f"{type(rule).__qualname__} declares no cost: it is not a lrp_domains Rule with a cost")
    return macs(nonnegative)


def lower_bound(model: nn.Module, inputs: torch.Tensor, composite: Composite) -> float:
    """The composite's MACs over a gradient's (both for ``inputs``), see the module docstring."""
    layers = layer_macs(model, inputs)
    if not layers:
        return 1.0
    last = layers[-1]["name"] if composite.last is not None else None
    total = 0
    for index, layer in enumerate(layers):
        if index == 0 and composite.first is not None:
            rule = composite.first
        elif layer["name"] == last:
            rule = composite.last
        else:
            rule = composite.rule_for(layer["name"], layer["module"])
        total += _factor(rule, layer["nonnegative"]) * layer["macs"]
    return total / (2 * sum(layer["macs"] for layer in layers))
