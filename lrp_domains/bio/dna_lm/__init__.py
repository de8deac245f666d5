"""DNA language models: k-mer and BPE tokenizers with offsets, the token-to-base explainer, a tiny
NT-like model."""
