"""Text adapter: AttnLRP and CP-LRP for Hugging Face transformers; token and word relevance.

Importing it registers the ``attnlrp`` and ``cp-lrp`` composites.
"""

from lrp_domains.text.composites import attnlrp, cp_lrp
from lrp_domains.text.explainer import TextExplainer
from lrp_domains.text.latent import HeadRelevance, LayerFlow, corpus_heads, head_relevance, layer_flow
from lrp_domains.text.result import TextExplanation

__all__ = [
    "HeadRelevance",
    "LayerFlow",
    "TextExplainer",
    "TextExplanation",
    "attnlrp",
    "corpus_heads",
    "cp_lrp",
    "head_relevance",
    "layer_flow",
]
