"""Concept Relevance Propagation in bio: CNN filters as motifs, hidden units of expression models."""
