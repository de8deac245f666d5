"""The ``attnlrp`` and ``cp-lrp`` composites for transformers models."""

from __future__ import annotations

import inspect

from torch import nn

from lrp_domains.core.composite import Composite, LayerKey
from lrp_domains.core.composites import register
from lrp_domains.core.functional import pass_handler, stop_handler
from lrp_domains.core.rules import Epsilon, Identity, Rule
from lrp_domains.text.attention import TransformersAttention
from lrp_domains.text.mixtures import RouterRule, is_bloom_gelu, is_router, mixture_functional
from lrp_domains.text.rules import ActivationRule, ComposedActivationRule, LayerNormRule, gate_detaching_product
from lrp_domains.text.state_space import GatedRMSNormRule, SelectiveScans, is_gated_rms_norm, state_space_functional


def transformers_activations() -> tuple[type, ...]:
    """The elementwise activation modules of ``transformers.activations`` (GELU variants, SiLU...)."""
    import transformers.activations as activations

    return tuple(
        cls
        for cls in vars(activations).values()
        if inspect.isclass(cls) and issubclass(cls, nn.Module) and cls.__module__ == activations.__name__
    )


def is_rms_norm(module: nn.Module) -> bool:
    """RMS normalisation: torch's ``nn.RMSNorm``, or a transformers RMSNorm (``LlamaRMSNorm``,
    ``GemmaRMSNorm``...: no common base class; transformers itself recognises them by the
    ``RMSNorm`` name in its weight initialisation), a leaf module with a 1-D ``weight`` only."""
    if isinstance(module, nn.RMSNorm):
        return True
    if not type(module).__name__.endswith("RMSNorm") or next(module.children(), None) is not None:
        return False
    params = dict(module.named_parameters(recurse=False))
    return set(params) <= {"weight"} and all(p.dim() == 1 for p in params.values())


def _rules(variant: str, epsilon: float) -> dict[LayerKey, Rule]:
    from transformers.models.esm.modeling_esm import EsmIntermediate
    from transformers.pytorch_utils import Conv1D

    return {
        # Mixture-of-experts routers: the routing weights are constants (lrp_domains.text.mixtures).
        is_router: RouterRule(),
        # Mamba-2's gated RMSNorm (lrp_domains.text.state_space).
        is_gated_rms_norm: GatedRMSNormRule(gate_constant=variant == "cp-lrp"),
        (nn.Linear, Conv1D): Epsilon(epsilon),
        nn.LayerNorm: LayerNormRule(),
        # RMSNorm with the RMS constant is y = x * c: the identity rule (AttnLRP, Sec. 3.3.2).
        is_rms_norm: Identity(),
        (nn.GELU, nn.SiLU, nn.Tanh, nn.Mish, *transformers_activations()): ActivationRule(tag_gate=variant == "cp-lrp"),
        is_bloom_gelu: ActivationRule(tag_gate=variant == "cp-lrp"),
        # ESM / Nucleotide Transformer: dense, then GELU written out with erf in the forward.
        EsmIntermediate: ComposedActivationRule("dense"),
    }


def attnlrp(epsilon: float = 0.0) -> Composite:
    """AttnLRP (Achtibat et al., ICML 2024): LRP-0/epsilon on linear layers (``epsilon=0`` by
    default, as LXT; a positive value stabilizes), LayerNorm/RMSNorm with the statistics
    constant, identity rule on activations, uniform rule on attention and gated products,
    softmax by its gradient."""
    return Composite(
        _rules("attnlrp", epsilon),
        canonizers=[TransformersAttention("attnlrp"), SelectiveScans()],
        functional={
            **mixture_functional(epsilon),
            **state_space_functional("attnlrp"),
            "softmax": pass_handler,
            "log_softmax": pass_handler,
        },
        name="attnlrp",
    )


def cp_lrp(epsilon: float = 0.0) -> Composite:
    """CP-LRP (Ali et al., ICML 2022): as AttnLRP, but the attention probabilities and the gates
    of gated MLPs are constants: no relevance flows through them."""
    return Composite(
        _rules("cp-lrp", epsilon),
        canonizers=[TransformersAttention("cp-lrp"), SelectiveScans()],
        functional={
            **mixture_functional(epsilon),
            **state_space_functional("cp-lrp"),
            "softmax": stop_handler,
            "log_softmax": stop_handler,
            "mul": gate_detaching_product,
            "__mul__": gate_detaching_product,
            "__rmul__": gate_detaching_product,
        },
        name="cp-lrp",
    )


register("attnlrp", attnlrp)
register("cp-lrp", cp_lrp)
