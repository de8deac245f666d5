"""Bio adapter: gene-level relevance for expression models (sequences: see the sequence issue)."""

from lrp_domains.bio.expression import ExpressionExplainer
from lrp_domains.bio.genes import GeneExplanation

__all__ = ["ExpressionExplainer", "GeneExplanation"]
