"""Benchmarks: scripts that print ratios measured in one run (``lrp-domains bench ...``).

Grouped by what they measure: ``engine/`` (the core engine and the sequence adapter), ``text/``,
``genomics/``, ``genes/``, ``gpu/`` and ``runs/`` (whole commands in processes); ``data/`` holds the
synthetic ground truth they share. At this root, what every bench shares: ``measure`` (timing in turns,
peak memory, correlation), ``methods`` (the table of attribution methods), ``cache`` (where trained
models are kept) and ``flops`` (the multiply-accumulates a composite's rules must compute).
"""
