"""Expression models: cells x genes readers, the gene explainer, the PBMC MLP, scvi-tools models,
transformers over genes."""
