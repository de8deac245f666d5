"""Small autograd Functions (and one autograd hook, :func:`epsilon_grad`) that change only the
backward pass.

Every rule in lrp-domains is "relevance = activation x modified gradient": the forward value of
each tensor is untouched and the backward carries a gradient ``g`` such that the relevance of a
tensor ``a`` is ``a * g``. What is here are the elementary gradient modifications that the rules
combine.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def epsilon_scale(grad: torch.Tensor, z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``grad * z / stab(z)``: the LRP-epsilon modification of the gradient at a layer output ``z``."""
    # grad * z / stab(z) = grad * |z| / (|z| + eps) = grad - eps * grad / (|z| + eps)
    return torch.addcdiv(grad, grad, z.abs().add_(epsilon), value=-epsilon)


def epsilon_scale_rectified(grad: torch.Tensor, positive: torch.Tensor, epsilon: float) -> torch.Tensor:
    """:func:`epsilon_scale` at a layer output ``z`` followed by a ReLU, from the ReLU's output
    ``positive = max(z, 0)`` and a ``grad`` the ReLU's backward has already set to zero wherever
    ``z <= 0``: there the scaled gradient is zero whatever the denominator, and wherever ``z > 0``
    ``positive + eps`` is ``|z| + eps`` exactly, so the result is the same bits with one elementwise
    pass fewer (on a 2-core machine each pass over a layer of a batch wakes the thread pool)."""
    return torch.addcdiv(grad, grad, positive.add(epsilon), value=-epsilon)


class IdentityRuleGrad(torch.autograd.Function):
    """Elementwise ``y = f(x)`` whose backward passes relevance unchanged: ``R_x = R_y``.

    The identity rule for activations (Montavon et al. 2019; Achtibat et al. 2024, AttnLRP,
    Sec. 3.3.1): the modified gradient is ``g_x = g_y * f(x) / x`` (0 where ``x = 0``). The ratio
    is formed in the forward, where ``f(x)`` is at hand, and kept instead of ``x``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:  # noqa: D102
        y = fn(x)
        # 0/0 (and f(0)/0 for f(0) != 0) become 0: the input is 0 there, and so is its relevance.
        ctx.save_for_backward(torch.div(y, x).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0))
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


class ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by a constant ``factor``.

    With ``factor = 1/k`` on each of the ``k`` input-dependent operands of a product, this is the
    uniform rule of AttnLRP (Achtibat et al. 2024, Prop. 3.3): each operand of ``a * b`` (or
    ``A @ B``) receives an equal share of the product's relevance.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:  # noqa: D102
        ctx.factor = factor
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        return grad * ctx.factor, None


def epsilon_grad(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Attach the LRP-epsilon gradient modification to a layer output ``z``: the gradient arriving
    at ``z`` is multiplied by ``z / stab(z)`` (:func:`epsilon_scale`).

    Placed on the output ``z`` of a layer that is linear in its input, the layer's own backward
    then gives the LRP-epsilon rule (Bach et al. 2015, Eq. 58):
    ``R_in = x * W^T (R_out / stab(z))`` with ``R_out = z * g_out``.

    A pre-hook on the node that made ``z`` rather than an autograd Function: the same arithmetic
    without a Python Function object per layer call (at one example per call, the Function's apply
    and backward were a sixth of a small convolution's time, measured). Autograd runs a tensor's
    own hooks before its node's pre-hooks, so a hook a user puts on the layer's output still sees
    the gradient before the scale, as it did with the Function. The denominator ``|z| + eps`` is
    made here, from ``z`` as the forward made it, so a later in-place change cannot reach it. The
    caller gives a ``z`` of the layer's own making (a module that hands back its input gives a view
    of it: its node is then on that path alone)."""
    if not z.requires_grad:
        return z
    node = z.grad_fn
    if node is None:  # a leaf: hook a node of its own
        z = z.view_as(z)
        node = z.grad_fn
    assert node is not None  # a non-leaf tensor that requires grad has one
    index = z.output_nr
    denominator = z.detach().abs().add_(epsilon)

    def scale(grad_outputs: tuple) -> tuple:
        grad = grad_outputs[index]
        if grad is None:
            return grad_outputs
        scaled = torch.addcdiv(grad, grad, denominator, value=-epsilon)
        if len(grad_outputs) == 1:  # most layers' nodes: one output
            return (scaled,)
        return grad_outputs[:index] + (scaled,) + grad_outputs[index + 1 :]

    node.register_prehook(scale)
    return z


def identity_rule(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Compute ``fn(x)`` with the LRP identity rule ``R_x = R_fn(x)`` (see IdentityRuleGrad)."""
    return IdentityRuleGrad.apply(x, fn)


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Return ``x`` unchanged, with its gradient scaled by ``factor`` (see ScaleGrad)."""
    return ScaleGrad.apply(x, factor)


def stop_grad(x: torch.Tensor) -> torch.Tensor:
    """The stop rule: ``x`` passes forward, no relevance passes back (CP-LRP, Ali et al. 2022)."""
    return x.detach()
