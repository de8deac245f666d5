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

import torch
from torch import nn
from torch.nn import functional as F

Forward = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
InputVJP = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AffineOps:
    """A layer ``z = f(x; W, b)`` that is affine in ``x``, as two functions of its parameters."""

    forward: Forward
    input_vjp: InputVJP

    def vjp(self, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """``W^T grad`` in the input's shape (the gradient of ``<grad, f(x; W, 0)>`` in ``x``)."""
        return self.input_vjp(x, weight, grad)


def _autograd_vjp(forward: Forward) -> InputVJP:
    """Fallback transposed map for layers without a direct backward kernel: one extra forward."""

    def vjp(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            probe = x.detach().requires_grad_(True)
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
    padding = module.padding
    if padding == "valid":
        padding = (0,) * len(module.kernel_size)
    elif padding == "same":
        padding = _same_padding(module)
        if padding is None:
            return None
    stride, dilation, groups = list(module.stride), list(module.dilation), module.groups
    output_padding = [0] * len(module.kernel_size)

    def vjp(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        grad_input, _, _ = torch.ops.aten.convolution_backward(
            grad.contiguous(), x, weight, None, stride, list(padding), dilation, False,
            output_padding, groups, [True, False, False],
        )
        return grad_input

    return vjp


def affine_ops(module: nn.Module) -> AffineOps | None:
    """The functional form of ``module`` if it is an affine layer we have rules for, else None.

    Covered: ``nn.Linear`` (and subclasses such as ``NonDynamicallyQuantizableLinear``),
    ``nn.Conv1d/2d/3d`` with any padding mode, ``nn.ConvTranspose1d/2d/3d``.
    """
    if isinstance(module, nn.Linear):
        return AffineOps(F.linear, _linear_vjp)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        def conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            return module._conv_forward(x, weight, bias)

        return AffineOps(conv_forward, _conv_vjp(module) or _autograd_vjp(conv_forward))
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        transpose = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[len(module.kernel_size)]

        def transpose_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            return transpose(x, weight, bias, module.stride, module.padding, module.output_padding,
                             module.groups, module.dilation)

        return AffineOps(transpose_forward, _autograd_vjp(transpose_forward))
    return None


def output_channel_shape(module: nn.Module, ndim: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-output-feature vector over a layer output of ``ndim`` dims."""
    if isinstance(module, nn.Linear):
        return (-1,)
    return (-1,) + (1,) * (ndim - 2)
