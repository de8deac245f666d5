"""Module and functional rules for transformers (AttnLRP, Achtibat et al. 2024; CP-LRP, Ali et al. 2022)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lrp_domains.core.functional import uniform_handler
from lrp_domains.core.gradients import identity_rule
from lrp_domains.core.rules import Rule, single_input

if TYPE_CHECKING:
    from lrp_domains.core.engine.scope import ModuleCall

#: Attribute set on activation outputs that may gate a product (``act(gate) * up``).
GATE_TAG = "_lrp_domains_gate"


class LayerNormRule(Rule):
    """LayerNorm with the standard deviation treated as a constant (AttnLRP, Sec. 3.3.2).

    ``y = (x - mean(x)) / std * w + b`` is then affine in ``x``; its gradient with ``std`` fixed,
    ``g_x = h - mean(h)`` with ``h = g_y * w / std``, makes ``x * g_x`` the epsilon rule of that
    affine map. The forward is the module's own, unchanged.
    """

    cost = 2  # the forward and a backward of the gradient's size (elementwise, as the norm's own)

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        x = single_input(call, args, kwargs)
        module = call.module
        if type(module) is nn.LayerNorm and not x.is_nested:
            return _NativeLayerNormFunction.apply(x, module)
        return _LayerNormFunction.apply(x, module, call.original)

    def ledger_bias(self, call: ModuleCall) -> torch.Tensor | None:
        """For ``nn.LayerNorm`` over one dimension, its shift ``b``: with ``std`` fixed the map is
        ``A x + b`` and this rule's gradient is ``A^T g``, so ``x A^T g = (y - b) g`` and the norm
        absorbs ``b g`` (:meth:`~lrp_domains.core.rules.Rule.ledger_bias`)."""
        module = call.module
        if type(module) is not nn.LayerNorm or len(module.normalized_shape) != 1:
            return None
        return torch.zeros(0) if module.bias is None else module.bias


class _NativeLayerNormFunction(torch.autograd.Function):
    """``nn.LayerNorm`` itself: ``native_layer_norm`` (the kernel ``F.layer_norm`` runs, so the
    output is the module's) also returns ``1 / std``, which the backward reuses."""

    @staticmethod
    def forward(ctx, x, module):  # noqa: D102
        out, _, rstd = torch.native_layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
        ctx.save_for_backward(rstd)
        ctx.module = module
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (rstd,) = ctx.saved_tensors
        module = ctx.module
        dims = tuple(range(-len(module.normalized_shape), 0))
        h = grad * rstd.to(grad.dtype)
        if module.weight is not None:
            h = h * module.weight
        return h - h.mean(dims, keepdim=True), None


class _LayerNormFunction(torch.autograd.Function):
    """Any other LayerNorm module: its own forward; the standard deviation recomputed."""

    @staticmethod
    def forward(ctx, x, module, original):  # noqa: D102
        ctx.save_for_backward(x)
        ctx.module = module
        return original(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (x,) = ctx.saved_tensors
        module = ctx.module
        dims = tuple(range(-len(module.normalized_shape), 0))
        compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        xc, gc = x.to(compute), grad.to(compute)
        std = torch.sqrt(xc.var(dims, unbiased=False, keepdim=True) + module.eps)
        h = gc / std
        if module.weight is not None:
            h = h * module.weight.to(compute)
        return (h - h.mean(dims, keepdim=True)).to(x.dtype), None, None


class ActivationRule(Rule):
    """Identity rule for an elementwise activation module, ``R_in = R_out`` (AttnLRP, Sec. 3.3.1).

    With ``tag_gate`` (CP-LRP) the output is marked, so that a product it gates
    (``act(gate) * up``) treats it as a constant: all relevance goes to ``up``.
    """

    cost = 2  # the forward (and the ratio f(x) / x), an elementwise product in the backward
    preserves_relevance = True  # the identity rule (see Identity)

    def __init__(self, tag_gate: bool = False) -> None:
        self.tag_gate = tag_gate

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        x = single_input(call, args, kwargs)
        out = identity_rule(x, call.original) if x.requires_grad else call.original(x)
        if self.tag_gate:
            setattr(out, GATE_TAG, True)
        return out


def gate_detaching_product(func: Callable, args: tuple, kwargs: dict) -> Any:
    """CP-LRP products: a gate (tagged activation output) is a constant; other products uniform."""
    tensors = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    if len(tensors) == 2 and any(getattr(t, GATE_TAG, False) for t in tensors):
        args = tuple(a.detach() if isinstance(a, torch.Tensor) and getattr(a, GATE_TAG, False) else a for a in args)
        return func(*args, **kwargs)
    return uniform_handler(func, args, kwargs)


class ComposedActivationRule(Rule):
    """Identity rule for an activation written out inside a module's forward, after a linear child:
    ``y = act(inner(x))`` with ``act`` elementwise (ESM's and Nucleotide Transformer's
    ``EsmIntermediate``: ``x * 0.5 * (1 + erf(x / sqrt 2))`` as torch operations, which the functional
    rules would read as a product and an ``erf``).

    ``inner`` runs with its own rule (epsilon for a linear layer); the activation gets the identity
    rule ``R_inner = R_y`` (AttnLRP, Achtibat et al. 2024, Sec. 3.3.1): the modified gradient is
    ``g_y * y / z`` with ``z = inner(x)``. The output is the module's own forward, unchanged.
    """

    #: The module's forward twice (``inner`` under its rule, the whole without gradient) and
    #: ``inner``'s transposed product.
    cost = 3

    def __init__(self, inner: str = "dense") -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"ComposedActivationRule({self.inner!r})"

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        x = single_input(call, args, kwargs)
        if not x.requires_grad:
            return call.original(x)
        z = getattr(call.module, self.inner)(x)
        with torch.no_grad():
            y = call.original(x)
        return _GivenOutputIdentity.apply(z, y)


class _GivenOutputIdentity(torch.autograd.Function):
    """Forward: the given output ``y``; backward: ``g_z = g_y * y / z`` (0 where ``z = 0``)."""

    @staticmethod
    def forward(ctx, z, y):  # noqa: D102
        ctx.save_for_backward(torch.div(y, z).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0))
        return y.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None
