"""Latent relevance (Concept Relevance Propagation), re-exported from :mod:`lrp_domains.core.latent`."""

from lrp_domains.core.latent import (
    Concepts,
    concept_relevance,
    conditional_relevance,
    explain_concepts,
    layer_relevance,
)

__all__ = ["Concepts", "concept_relevance", "conditional_relevance", "explain_concepts", "layer_relevance"]
