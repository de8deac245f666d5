"""Where the benches cache the models they train (so that re-runs do not retrain)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The benches' cache folder, ``parts`` below it: ``$LRP_DOMAINS_CACHE`` when set, else
    ``$XDG_CACHE_HOME/lrp-domains``, else ``~/.cache/lrp-domains`` (an empty variable counts as unset)."""
    root = os.environ.get("LRP_DOMAINS_CACHE")
    if not root:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lrp-domains")
    return Path(root, *parts)
