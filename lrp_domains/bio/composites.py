"""The ``genomics`` composite for one-hot sequence models (registered on import)."""

from __future__ import annotations

from torch import nn

from lrp_domains.bio.architectures.rules import DetachedStdNorm, elementwise_activation
from lrp_domains.core.composite import Composite
from lrp_domains.core.composites import CONV, DENSE, register
from lrp_domains.core.functional import pass_handler, stop_handler
from lrp_domains.core.rules import Epsilon, Gamma, Identity, ZBox

#: How softmax (attention, attention pooling) is treated: its output held constant (CP-LRP, Ali et
#: al. 2022; conserves relevance) or its plain gradient with the uniform rule on the products that
#: use it (AttnLRP, Achtibat et al. 2024, Prop. 3.1 and 3.3).
SOFTMAX_RULES = {"detach": stop_handler, "gradient": pass_handler}


def genomics(gamma: float = 0.25, epsilon: float = 1e-6, softmax: str = "detach") -> Composite:
    """z-box on the input layer with the one-hot bounds [0, 1] (relevance also reaches the
    absent bases: the hypothetical contributions), gamma on the other convolutions, epsilon on
    dense layers. Chosen on the synthetic planted-motif benchmark (``lrp-domains bench
    sequences``; see the README).

    For the published profile and hybrid architectures (bpnet-lite, Enformer, Borzoi; see
    :mod:`lrp_domains.bio.architectures.rules`): LayerNorm with its standard deviation held
    constant (AttnLRP, Sec. 3.3.2), softmax detached in attention and attention pooling (CP-LRP,
    Ali et al. 2022), the identity rule on their custom elementwise modules (Enformer's GELU,
    ChromBPNet's exp/log). ``softmax="gradient"`` treats softmax as AttnLRP does instead (see
    :data:`SOFTMAX_RULES`)."""
    if softmax not in SOFTMAX_RULES:
        raise ValueError(f"softmax={softmax!r}: choose one of {sorted(SOFTMAX_RULES)}")
    return Composite(
        {
            CONV: Gamma(gamma),
            DENSE: Epsilon(epsilon),
            nn.LayerNorm: DetachedStdNorm(),
            elementwise_activation: Identity(),
        },
        first=ZBox(0.0, 1.0),
        functional={"softmax": SOFTMAX_RULES[softmax]},
        name="genomics",
        conserves=softmax == "detach",
    )


register("genomics", genomics)
