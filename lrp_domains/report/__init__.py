"""Reports: tables, figures and pages shared by every domain's report, and :func:`write_report`,
which finds a domain's report writer through its explainer (never by the domain's name)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = [
    "Page",
    "Section",
    "figure",
    "image",
    "link",
    "logo",
    "paragraph",
    "raw",
    "table",
    "token_heatmap",
    "write_report",
]


_BLOCKS = {"Page", "Section", "figure", "image", "link", "logo", "paragraph", "raw", "table", "token_heatmap"}


def __getattr__(name: str) -> Any:
    # The page blocks import pandas (a quarter second): loaded on first use, so that a command
    # that prints one line from a submodule (``report.ledger``) does not pay for it.
    if name in _BLOCKS:
        return getattr(importlib.import_module("lrp_domains.report.blocks"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def write_report(explainer: Any, result: Any, out_dir: str | Path, **kwargs: Any) -> dict[str, Path]:
    """Write the report of ``result`` (an explanation by ``explainer``, or the explainer class)
    into ``out_dir`` with the writer its domain names (``report = "module:function"``)."""
    spec = getattr(explainer, "report", None)
    if not spec:
        kind = getattr(explainer, "kind", type(explainer).__name__)
        raise ValueError(f"the {kind} explainer names no report writer (its class attribute report)")
    module_name, _, function = spec.partition(":")
    writer = getattr(importlib.import_module(module_name), function)
    try:
        return writer(result, out_dir, **kwargs)
    except ValueError as error:
        from lrp_domains.core.engine.finite import NonFiniteOutputs

        if isinstance(error, NonFiniteOutputs):  # every record NaN/Inf: name the model's first non-finite parameter
            raise error.naming(getattr(explainer, "model", None)) from None
        raise
