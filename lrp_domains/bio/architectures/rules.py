"""Rules for the layers of published genomics architectures that the core has none for.

- :class:`DetachedStdNorm`: LayerNorm with its standard deviation held constant (Enformer's and
  Borzoi's transformer blocks), AttnLRP (Achtibat et al. 2024), Sec. 3.3.2 / Ali et al. 2022,
  Sec. 3.2: the norm is then linear in its input (centring, then a diagonal scale), and its
  gradient gives the proportional (LRP-0) rule, which conserves relevance up to the bias.
- Softmax, in attention and in attention pooling (Enformer's ``AttentionPool``), is detached
  (CP-LRP, Ali et al. 2022, Sec. 3; :func:`~lrp_domains.core.functional.stop_handler`): the
  pooling ``sum_p softmax(l)_p x_p`` and ``softmax(QK^T) V`` are then linear in ``x`` and ``V``
  with constant weights, so relevance goes through the values, in proportion to their
  contributions, and is conserved.
- Elementwise custom activations (Enformer's ``GELU``, ``sigmoid(1.702 x) * x``; ChromBPNet's
  ``exp`` and ``log`` modules) get the identity rule (Montavon et al. 2019, Sec. 10.2.1):
  ChromBPNet's counts ``log(exp(a) + exp(b))`` then give each path the share
  ``exp(a) / (exp(a) + exp(b))`` of the explained counts (identity through ``log``, the
  proportional rule through the sum, identity through ``exp``), which is conserved.

Module types are matched by their class's module and name, so the optional packages are never
imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lrp_domains.core.rules import Rule, single_input

if TYPE_CHECKING:
    from lrp_domains.core.engine.scope import ModuleCall

__all__ = ["DetachedStdNorm", "elementwise_activation"]


class DetachedStdNorm(Rule):
    """LayerNorm with the standard deviation treated as a constant (AttnLRP, Achtibat et al. 2024,
    Sec. 3.3.2; Ali et al. 2022, Eq. 9).

    ``y = (x - mean(x)) / std(x) * w + b`` with ``std`` detached is linear in ``x``; its gradient
    ``g_x = C (w g / std)`` (``C`` the centring projection over the normalised dimensions) is the
    LRP-0 rule for that linear map: ``sum_i x_i g_x,i = sum_i (y_i - b_i) g_i``. The forward value
    is the module's own output, unchanged.
    """

    cost = 2  # the forward and a backward of the gradient's size (elementwise)

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        x = single_input(call, args, kwargs)
        module = call.module
        if not isinstance(module, nn.LayerNorm):
            raise TypeError(f"{call.describe()}: DetachedStdNorm is for torch.nn.LayerNorm modules")
        return _DetachedStdNormFunction.apply(x, module)


class _DetachedStdNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, module: nn.LayerNorm) -> torch.Tensor:  # noqa: D102
        dims = tuple(range(x.dim() - len(module.normalized_shape), x.dim()))
        out = torch.nn.functional.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
        rstd = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + module.eps)
        ctx.save_for_backward(rstd)
        ctx.dims, ctx.weight = dims, None if module.weight is None else module.weight.detach()
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (rstd,) = ctx.saved_tensors
        scaled = grad * rstd if ctx.weight is None else grad * ctx.weight * rstd
        return scaled - scaled.mean(ctx.dims, keepdim=True), None


def _class_of(module: nn.Module) -> tuple[str, str]:
    kind = type(module)
    return kind.__module__, kind.__name__


class _ElementwiseActivation:
    """A composite key (a predicate with a stable repr, which run manifests compare)."""

    def __call__(self, module: nn.Module) -> bool:
        """True for the custom elementwise modules of the supported architectures: Enformer's
        ``GELU`` (``sigmoid(1.702 x) * x``) and ChromBPNet's ``_Exp``/``_Log``."""
        source, name = _class_of(module)
        return (source.startswith("enformer_pytorch") and name == "GELU") or (
            source.startswith("bpnetlite") and name in ("_Exp", "_Log")
        )

    def __repr__(self) -> str:
        return "elementwise_activation"


#: Predicate (composite key): Enformer's GELU and ChromBPNet's exp/log modules.
elementwise_activation = _ElementwiseActivation()
