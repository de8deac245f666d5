"""Rules for ALiBi attention and mixture-of-experts layers (AttnLRP and CP-LRP).

**ALiBi** (Press et al. 2022; Bloom, MPT, DNABERT-2): the attention scores are ``q k^T / sqrt(d) + m``
with ``m`` a position bias that does not depend on the input, so it gets what every constant bias
of the scores gets: nothing (the mask is such a bias too). Bloom computes its scores itself, in
one ``baddbmm(m, q, k^T, beta, alpha)``: :func:`biased_product_handler` gives the product the
uniform rule (half of its relevance to ``q``, half to ``k``, as for ``q @ k^T`` elsewhere) and the
bias, a constant, none. The softmax and ``A @ V`` are the usual functional rules (AttnLRP: softmax
by its gradient, ``A @ V`` uniform; CP-LRP: the probabilities constant), so Bloom's Q and K end with
1/4 and V with 1/2 of the gradient under AttnLRP, as through the attention interface. MPT adds its
bias with ``+``, which needs nothing. Bloom's GELU (``BloomGelu``, an autograd Function whose own
forward hides the activation from the functional rules) gets the identity rule like every GELU.

**Mixture of experts** (Mixtral, Qwen3-MoE, OLMoE, DeepSeek-V3, Jamba...): the router's top-k
routing weights are constants (:class:`RouterRule`: the router runs on a detached input, so its
softmax or sigmoid, ``topk`` and the normalisation ``/=`` (Mixtral's ``div_``) carry no relevance;
the same choice as CP-LRP's constant attention probabilities, and LXT's for MoE). An expert's output
times its constant weight is then linear in the expert's input: its matrix products, looped
(``F.linear`` per expert), batched (``bmm``) or grouped (``torch._grouped_mm``,
``F.grouped_mm``), get the epsilon rule (LRP-0 at ``epsilon=0``), its gated product the composite's
product rule, and ``index_add_`` scatters relevance back to the tokens unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lrp_domains.core.functional import epsilon_handler, pass_handler
from lrp_domains.core.gradients import scale_grad
from lrp_domains.core.rules import Rule

if TYPE_CHECKING:
    from lrp_domains.core.engine.scope import ModuleCall

__all__ = ["RouterRule", "biased_product_handler", "is_bloom_gelu", "is_router", "mixture_functional"]

#: Biased products ``input + alpha * (a @ b)`` by torch name, with the names of the two factors.
BIASED_PRODUCTS = {
    "baddbmm": ("batch1", "batch2"),
    "addbmm": ("batch1", "batch2"),
    "addmm": ("mat1", "mat2"),
    "addmv": ("mat", "vec"),
    "addr": ("vec1", "vec2"),
}


def _is_dependent(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def biased_product_handler(func: Callable, args: tuple, kwargs: dict) -> Any:
    """``input * beta + alpha * (a @ b)`` (``baddbmm``, ``addmm``...): the uniform rule on the product
    (each input-dependent factor gets ``1/k`` of its relevance) and the bias passed by its gradient
    (a constant bias, as ALiBi's, gets nothing; an input-dependent one keeps what a sum gives it)."""
    names = BIASED_PRODUCTS[getattr(func, "__name__", "")]
    args, kwargs = list(args), dict(kwargs)
    slots: list[tuple[str, Any]] = []
    for position, name in enumerate(names, start=1):
        if name in kwargs:
            slots.append((name, kwargs[name]))
        elif position < len(args):
            slots.append((str(position), args[position]))
    k = sum(_is_dependent(value) for _, value in slots)
    if k > 1:
        for slot, value in slots:
            scaled = scale_grad(value, 1.0 / k) if _is_dependent(value) else value
            if slot.isdigit():
                args[int(slot)] = scaled
            else:
                kwargs[slot] = scaled
    return func(*args, **kwargs)


def is_bloom_gelu(module: nn.Module) -> bool:
    """Bloom's ``BloomGelu`` (a tanh-GELU in an autograd Function of its own)."""
    return type(module).__name__ == "BloomGelu"


def is_router(module: nn.Module) -> bool:
    """A mixture-of-experts top-k router (``MixtralTopKRouter``, ``Qwen3MoeTopKRouter``,
    ``DeepseekV3TopkRouter``...: no common base class; a module named ``...Router`` with ``top_k``)."""
    return type(module).__name__.lower().endswith("router") and hasattr(module, "top_k")


class RouterRule(Rule):
    """The router's outputs (logits, top-k weights, expert indices) are constants: it runs on its
    input detached, so no relevance flows back through the routing (the experts' outputs times these
    weights are then linear in the experts' input). The outputs are the router's own."""

    cost = 1  # the forward only: nothing passes back

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        return call.original(*args, **kwargs)


def mixture_functional(epsilon: float) -> dict[str, Callable]:
    """Functional rules for ALiBi scores and expert layers: biased products (``baddbmm``...), the
    experts' grouped matrix products and functional linear layers by the epsilon rule of the
    composite's ``epsilon`` (LRP-0 at 0), ``index_add_`` (tokens' expert outputs summed back) passed."""
    linear = epsilon_handler(epsilon) if epsilon > 0 else pass_handler
    table: dict[str, Callable] = dict.fromkeys(BIASED_PRODUCTS, biased_product_handler)
    table.update({name: linear for name in ("linear", "conv1d", "_grouped_mm", "grouped_mm", "grouped_mm_fallback")})
    table["index_add_"] = pass_handler
    return table
