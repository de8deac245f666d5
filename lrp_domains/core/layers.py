"""The affine layers that parameterised LRP rules apply to, in functional form.

A rule such as z+ or gamma evaluates the layer with modified weights (``W+``, ``W + gamma W+``)
and needs the transposed map ``s -> W'^T s``. :class:`AffineOps` gives both for one module:
``forward(x, weight, bias)`` computes exactly what the module's own forward computes with those
parameters, and ``input_vjp(x, weight, grad)`` the product with the transposed map, without
recomputing a forward where PyTorch has the backward kernel for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from lrp_domains.core.derived import derived

Forward = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
InputVJP = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AffineOps:
    """A layer ``z = f(x; W, b)`` that is affine in ``x``, as two functions of its parameters.

    ``feature_dim``: where inputs and outputs keep their features (-1 for Linear, 1 for Conv),
    set only when the weight's dims 0 and 1 are output and input features and there is a direct
    backward kernel (Linear, Conv with ``groups=1``). Several transposed products then run as one
    call on weights concatenated along those dims: one kernel instead of two, same arithmetic.
    """

    forward: Forward
    input_vjp: InputVJP
    feature_dim: int | None = None
    vjp_needs_input: bool = True

    def vjp(self, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """``W^T grad`` in the input's shape (the gradient of ``<grad, f(x; W, 0)>`` in ``x``)."""
        return self.input_vjp(x, weight, grad)

    def vjp_sum(self, x: torch.Tensor, terms: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``sum_i W_i^T grad_i``, stacked along output features where the layer allows it."""
        if self.feature_dim is None or len(terms) == 1:
            total = self.vjp(x, *terms[0])
            for weight, grad in terms[1:]:
                total = total + self.vjp(x, weight, grad)
            return total
        weights, grads = zip(*terms)
        stacked = derived(("cat", 0), weights, lambda: torch.cat(weights, 0))
        return self.vjp(x, stacked, torch.cat(grads, self.feature_dim))

    def vjp_each(self, x: torch.Tensor, weights: list[torch.Tensor], grad: torch.Tensor) -> list[torch.Tensor]:
        """``[W_i^T grad for W_i in weights]``, stacked along input features where allowed."""
        if self.feature_dim is None:
            return [self.vjp(x, weight, grad) for weight in weights]
        shape = list(x.shape)
        shape[self.feature_dim] *= len(weights)
        stacked = self.vjp(x.new_empty(shape), derived(("cat", 1), weights, lambda: torch.cat(weights, 1)), grad)
        return list(stacked.chunk(len(weights), self.feature_dim))


def _autograd_vjp(forward: Forward) -> InputVJP:
    """Fallback transposed map for layers without a direct backward kernel: one extra forward.
    The map is linear, so it is evaluated at zero (``x`` may be a shape proxy)."""

    def vjp(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            probe = torch.zeros(x.shape, dtype=x.dtype, device=x.device, requires_grad=True)
            (result,) = torch.autograd.grad(forward(probe, weight, None), probe, grad)
        return result

    return vjp


def _linear_vjp(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad @ weight


def _same_padding(module: nn.modules.conv._ConvNd) -> tuple[int, ...] | None:
    """Symmetric padding equivalent to ``padding='same'``, or None when it would be asymmetric."""
    pads = []
    for kernel, dilation in zip(module.kernel_size, module.dilation):
        total = dilation * (kernel - 1)
        if total % 2:
            return None
        pads.append(total // 2)
    return tuple(pads)


def _conv_vjp(module: nn.modules.conv._ConvNd) -> InputVJP | None:
    """Transposed convolution through ``aten.convolution_backward`` (input gradient only)."""
    if module.padding_mode != "zeros":
        return None
    padding: tuple[int, ...]
    if not isinstance(module.padding, str):
        padding = module.padding
    elif module.padding == "valid":
        padding = (0,) * len(module.kernel_size)
    else:  # "same": the only other string nn.Conv accepts
        same = _same_padding(module)
        if same is None:
            return None
        padding = same
    stride, dilation, groups = list(module.stride), list(module.dilation), module.groups
    output_padding = [0] * len(module.kernel_size)

    def vjp(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        grad_input, _, _ = torch.ops.aten.convolution_backward(
            grad.contiguous(),
            x,
            weight,
            None,
            stride,
            list(padding),
            dilation,
            False,
            output_padding,
            groups,
            [True, False, False],
        )
        return grad_input

    return vjp


def parameters_of(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias (None where it has none) of an affine layer, as the module holds them."""
    weight, bias = module.weight, getattr(module, "bias", None)
    assert isinstance(weight, torch.Tensor)
    return weight, bias


def affine_ops(module: nn.Module) -> AffineOps | None:
    """The functional form of ``module`` if it is an affine layer we have rules for, else None.

    Covered: ``nn.Linear`` (and subclasses such as ``NonDynamicallyQuantizableLinear``),
    ``nn.Conv1d/2d/3d`` with any padding mode, ``nn.ConvTranspose1d/2d/3d``.
    """
    if isinstance(module, nn.Linear):
        return AffineOps(F.linear, _linear_vjp, feature_dim=-1, vjp_needs_input=False)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):

        def conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            return module._conv_forward(x, weight, bias)

        direct = _conv_vjp(module)
        if direct is None:
            return AffineOps(conv_forward, _autograd_vjp(conv_forward))
        return AffineOps(conv_forward, direct, feature_dim=1 if module.groups == 1 else None)
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        transpose = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[len(module.kernel_size)]
        # _ConvNd types padding as str | tuple; transposed convolutions only take numbers.
        padding = cast("tuple[int, ...]", module.padding)

        def transpose_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            return transpose(
                x, weight, bias, module.stride, padding, module.output_padding, module.groups, module.dilation
            )

        return AffineOps(transpose_forward, _autograd_vjp(transpose_forward))
    return None


def output_channel_shape(module: nn.Module, ndim: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-output-feature vector over a layer output of ``ndim`` dims."""
    if isinstance(module, nn.Linear):
        return (-1,)
    return (-1,) + (1,) * (ndim - 2)
