"""lrp-domains: Layer-wise Relevance Propagation for text and biology, on one shared core."""

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

__version__ = "0.1.0"

__all__ = [
    "BASE_RULES", "Composite", "Explanation", "LRPCoverageError", "MergeBatchNorm", "Scope",
    "__version__", "composites", "explain", "rules",
]
