"""Benchmarks: scripts that print ratios measured in one run (``lrp-domains bench ...``)."""
