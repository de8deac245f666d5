"""``lrp-domains run STEP RUN_FOLDER``: what a user takes away from a finished run, read from its
shards (the report, seqlets, tracks); each step is a function of the library, called here."""

from __future__ import annotations

from lrp_domains.commands.run import app

__all__ = ["app"]
