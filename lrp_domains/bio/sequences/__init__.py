"""One-hot sequences and their explainer: encoding, targets of profile and track heads, genome
regions and tracks, the default CNN."""
