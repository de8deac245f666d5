"""The ``genomics`` composite for one-hot sequence models (registered on import)."""

from __future__ import annotations

from lrp_domains.core.composite import Composite
from lrp_domains.core.composites import CONV, DENSE, register
from lrp_domains.core.rules import Epsilon, Gamma, ZBox


def genomics(gamma: float = 0.25, epsilon: float = 1e-6) -> Composite:
    """z-box on the input layer with the one-hot bounds [0, 1] (relevance also reaches the
    absent bases: the hypothetical contributions), gamma on the other convolutions, epsilon on
    dense layers. Chosen on the synthetic planted-motif benchmark (``lrp-domains bench
    sequences``; see the README)."""
    return Composite({CONV: Gamma(gamma), DENSE: Epsilon(epsilon)}, first=ZBox(0.0, 1.0), name="genomics")


register("genomics", genomics)
