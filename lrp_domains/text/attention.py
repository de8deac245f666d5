"""Attention through transformers' own extension point, per model instance.

Inside a scope the model's config names an attention implementation that we register with
``AttentionInterface`` (and its mask function with ``AttentionMaskInterface``, so decoders keep
their causal mask): ``lrp_domains:<variant>:<original>``. It calls the model's original
implementation (SDPA, eager, flash...) unchanged, so outputs are identical, and only rescales or
stops the gradients of its inputs:

- AttnLRP: the uniform rule on ``A V`` gives ``A`` and ``V`` half each; the softmax keeps its
  gradient (Achtibat et al. 2024, Prop. 3.1); the uniform rule on ``Q K^T`` halves again. With
  every rule linear in the gradient, that is ``Q``, ``K`` scaled by 1/4 and ``V`` by 1/2.
- CP-LRP: ``Q`` and ``K`` are detached (the attention probabilities are constants), ``V`` keeps
  its whole gradient (Ali et al. 2022).

On exit the config's original implementation names are restored. Registering a new name changes
nothing for models that do not use it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lrp_domains.core.engine.scope import Scope, covered, current_scope
from lrp_domains.core.gradients import scale_grad

VARIANTS = ("attnlrp", "cp-lrp")
PREFIX = "lrp_domains"


def implementation_name(variant: str, original: str) -> str:
    """The registered name for ``variant`` wrapping the ``original`` implementation."""
    return f"{PREFIX}:{variant}:{original}"


def _model_eager_attention(module: nn.Module) -> Callable:
    """The ``eager_attention_forward`` of the modeling file that defines ``module``'s class."""
    for cls in type(module).__mro__:
        function = getattr(sys.modules.get(cls.__module__), "eager_attention_forward", None)
        if function is not None:
            return function
    raise RuntimeError(
        f"{type(module).__name__} runs eager attention but its modeling file has no eager_attention_forward; "
        "load the model with attn_implementation='sdpa' to explain it"
    )


def _make_attention(variant: str, original: str) -> Callable:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def attention(
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        function = _model_eager_attention(module) if original == "eager" else ALL_ATTENTION_FUNCTIONS[original]
        scope = current_scope()
        ledger = scope.ledger if scope is not None else None
        row = (f"{scope.ledger_label()}:attention", f"{variant} attention") if scope is not None else ("", "")
        if ledger is not None:  # the attention as one row of the ledger (AttnLRP: the softmax's gradient)
            query, key, value = (ledger.tap(row, t, "in") for t in (query, key, value))
        if variant == "attnlrp":
            query, key, value = scale_grad(query, 0.25), scale_grad(key, 0.25), scale_grad(value, 0.5)
        else:
            query, key = query.detach(), key.detach()
        with covered():
            output = function(module, query, key, value, attention_mask, *args, **kwargs)
        if ledger is not None and isinstance(output, tuple) and output:
            output = (ledger.tap(row, output[0], "out"), *output[1:])
        return output

    return attention


def register(variant: str, original: str) -> str:
    """Register (once) the wrapped implementation and its mask function; return its name."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    name = implementation_name(variant, original)
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, _make_attention(variant, original))
        if original in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS._global_mapping[original])
    return name


def _configs(config: Any) -> list[Any]:
    """A config and its sub-configs (recursively), each holding its own attention setting."""
    found, queue = [], [config]
    while queue:
        current = queue.pop()
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        for key in getattr(current, "sub_configs", {}) or {}:
            queue.append(getattr(current, key, None))
    return found


class TransformersAttention:
    """Canonizer: route a transformers model's attention through the ``variant``'s rules."""

    def __init__(self, variant: str = "attnlrp") -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant

    def __repr__(self) -> str:
        return f"TransformersAttention({self.variant!r})"

    def apply(self, model: nn.Module, scope: Scope) -> Callable[[], None] | None:
        """Point every config of ``model`` at the wrapped implementation; return the undo."""
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "_attn_implementation_internal"):
            return None
        saved = [
            (c, c._attn_implementation_internal)
            for c in _configs(config)
            if hasattr(c, "_attn_implementation_internal")
        ]
        for current, original in saved:
            original = original or "eager"
            if original.startswith(PREFIX + ":"):
                raise RuntimeError("this model is already being explained (its attention is wrapped)")
            current._attn_implementation_internal = register(self.variant, original)

        def undo() -> None:
            for current, original in saved:
                current._attn_implementation_internal = original

        return undo
