"""Genomics benches on planted-motif ground truth: attribution methods (``bench sequences``), peers (``bench
peers``, ``bench genomics-models``), latent concepts (``bench concepts``), motif annotation (``bench motifs``) and
variants (``bench variants``)."""
