"""This project's LRP as an inseq attribution method: importing this module registers
``"lrp_domains"`` with inseq (its registry finds every subclass of its attribution classes), so that
``inseq.load_model(model, "lrp_domains")`` explains generation step by step with AttnLRP
(``composite="cp-lrp"`` or any composite name as a keyword of ``load_model``).

inseq calls the method as it calls Captum's gradient methods: the inputs are the embeddings of the
prefix (inseq swaps the embedding layer for a pass-through while attributing), the extra
arguments its step function (``attributed_fn``: ``"logit"``, ``"probability"``, a contrastive step
function...), and :class:`~lrp_domains.captum.LRP` runs our engine over all of it.
"""

from __future__ import annotations

from typing import Any

from inseq.attr.feat.gradient_attribution import GradientAttributionRegistry

from lrp_domains.captum.attribution import LRP

__all__ = ["LRPAttribution"]


class LRPAttribution(GradientAttributionRegistry):
    """inseq's ``"lrp_domains"`` method: :class:`~lrp_domains.captum.LRP` on the attribution model."""

    method_name = "lrp_domains"

    def __init__(self, attribution_model: Any, composite: str = "attnlrp", **kwargs: Any) -> None:
        super().__init__(attribution_model)
        self.method = LRP(self.attribution_model, composite=composite)
