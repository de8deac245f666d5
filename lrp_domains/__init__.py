"""lrp-domains: Layer-wise Relevance Propagation for text and biology, on one shared core.

The names below are loaded on first use (PEP 562), so that ``import lrp_domains`` (which
``python -m lrp_domains`` and the ``lrp-domains`` command do first) does not import torch:
``lrp-domains --help`` answers without it. ``import lrp_domains as L; L.explain(...)`` and
``from lrp_domains import explain`` work as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


def _version() -> str:
    """The installed distribution's version (pyproject.toml is the one place it is written)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lrp-domains")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()

#: Name -> module it is read from; ``None``: the name is a submodule of this package.
_LAZY: dict[str, str | None] = {
    "BASE_RULES": "lrp_domains.core",
    "Composite": "lrp_domains.core",
    "Explanation": "lrp_domains.core",
    "LRPCoverageError": "lrp_domains.core",
    "MergeBatchNorm": "lrp_domains.core",
    "Scope": "lrp_domains.core",
    "explain": "lrp_domains.core",
    "composites": None,
    "rules": None,
    "core": None,  # imported eagerly before; ``lrp_domains.core`` keeps working after ``import lrp_domains``
}

__all__ = [
    "BASE_RULES",
    "Composite",
    "Explanation",
    "LRPCoverageError",
    "MergeBatchNorm",
    "Scope",
    "__version__",
    "composites",
    "explain",
    "rules",
]

if TYPE_CHECKING:
    from lrp_domains import composites, rules
    from lrp_domains.core import (
        BASE_RULES,
        Composite,
        Explanation,
        LRPCoverageError,
        MergeBatchNorm,
        Scope,
        explain,
    )


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    source = _LAZY[name]
    value = (
        importlib.import_module(f"{__name__}.{name}")
        if source is None
        else getattr(importlib.import_module(source), name)
    )
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
