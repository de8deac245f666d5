"""Where the project's small data lives: ``datasets/`` next to the package (a checkout or an
editable install)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def datasets_dir() -> Path:
    """The ``datasets/`` folder of the checkout; a clear error when the package runs without it."""
    path = Path(os.environ.get("LRP_DOMAINS_DATASETS", ROOT / "datasets"))
    if not path.is_dir():
        raise FileNotFoundError(
            f"the datasets folder is not at {path}: run from a checkout of lrp-domains (pip install -e .) or set "
            "LRP_DOMAINS_DATASETS to its datasets/ folder"
        )
    return path


def sst2_dev() -> Path:
    """``datasets/sst2/dev.tsv``: the 872 SST-2 validation sentences (``text<TAB>label``)."""
    return datasets_dir() / "sst2" / "dev.tsv"


def example_sentences() -> list[str]:
    """The 16 movie-review sentences of ``datasets/sentiment_examples.txt``."""
    lines = (datasets_dir() / "sentiment_examples.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]
