"""Reports: tables, figures and pages shared by every domain's report, and :func:`write_report`,
which finds a domain's report writer through its explainer (never by the domain's name)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from lrp_domains.report.blocks import Page, Section, figure, image, link, logo, paragraph, raw, table, token_heatmap

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
