"""Single-cell benches: which genes drive the default PBMC MLP, scANVI and a gene transformer, by method
(``bench genes``)."""
