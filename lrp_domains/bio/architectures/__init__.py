"""The published profile and hybrid genomics architectures (bpnet-lite, Enformer, Borzoi): input
layouts and their rules."""
