"""The ``attnlrp`` and ``cp-lrp`` composites for transformers models."""

from __future__ import annotations

import inspect

from torch import nn

from lrp_domains.core.composite import Composite, LayerKey
from lrp_domains.core.composites import register
from lrp_domains.core.functional import pass_handler, stop_handler
from lrp_domains.core.rules import Epsilon, Identity, Rule
from lrp_domains.text.attention import TransformersAttention
from lrp_domains.text.rules import ActivationRule, EmbeddingSource, LayerNormRule, gate_detaching_product


def transformers_activations() -> tuple[type, ...]:
    """The elementwise activation modules of ``transformers.activations`` (GELU variants, SiLU...)."""
    import transformers.activations as activations

    return tuple(
        cls for cls in vars(activations).values()
        if inspect.isclass(cls) and issubclass(cls, nn.Module) and cls.__module__ == activations.__name__
    )


class _RMSNormType(type):
    """``isinstance(m, RMSNorm)`` for torch's ``nn.RMSNorm`` and any ``*RMSNorm`` class
    (``LlamaRMSNorm``, ``GemmaRMSNorm``...): an elementwise scaling once the RMS is constant."""

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, nn.RMSNorm) or type(instance).__name__.endswith("RMSNorm")


class RMSNorm(metaclass=_RMSNormType):
    """Matches RMS normalisation modules by type or class name (see the metaclass)."""


def _rules(variant: str, epsilon: float) -> dict[LayerKey, Rule]:
    from transformers.pytorch_utils import Conv1D

    return {
        nn.Embedding: EmbeddingSource(),
        (nn.Linear, Conv1D): Epsilon(epsilon),
        nn.LayerNorm: LayerNormRule(),
        # RMSNorm with the RMS constant is y = x * c: the identity rule (AttnLRP, Sec. 3.3.2).
        RMSNorm: Identity(),
        (nn.GELU, nn.SiLU, nn.Tanh, nn.Mish, *transformers_activations()): ActivationRule(tag_gate=variant == "cp-lrp"),
    }


def attnlrp(epsilon: float = 0.0) -> Composite:
    """AttnLRP (Achtibat et al., ICML 2024): LRP-0/epsilon on linear layers (``epsilon=0`` by
    default, as LXT; a positive value stabilizes), LayerNorm/RMSNorm with the statistics
    constant, identity rule on activations, uniform rule on attention and gated products,
    softmax by its gradient."""
    return Composite(
        _rules("attnlrp", epsilon), canonizers=[TransformersAttention("attnlrp")],
        functional={"softmax": pass_handler, "log_softmax": pass_handler}, name="attnlrp",
    )


def cp_lrp(epsilon: float = 0.0) -> Composite:
    """CP-LRP (Ali et al., ICML 2022): as AttnLRP, but the attention probabilities and the gates
    of gated MLPs are constants: no relevance flows through them."""
    return Composite(
        _rules("cp-lrp", epsilon), canonizers=[TransformersAttention("cp-lrp")],
        functional={
            "softmax": stop_handler, "log_softmax": stop_handler,
            "mul": gate_detaching_product, "__mul__": gate_detaching_product, "__rmul__": gate_detaching_product,
        },
        name="cp-lrp",
    )


register("attnlrp", attnlrp)
register("cp-lrp", cp_lrp)
