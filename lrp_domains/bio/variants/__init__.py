"""Variant effects: windows from a VCF and a genome, the change in prediction and relevance, the
motif lost or gained."""
