"""Synthetic ground truth the benches, tests and workflows share: planted-motif sequences and the
default CNN's data splits, read profiles for a BPNet-like model, a variant benchmark, a tiny NT-like
DNA language model and its training."""
