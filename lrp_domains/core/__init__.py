"""Domain-free LRP: rules, composites, canonizers, the scoped engine and ``explain``."""

from lrp_domains.core import composites, rules
from lrp_domains.core.canonizers import MergeBatchNorm
from lrp_domains.core.composite import BASE_RULES, Composite
from lrp_domains.core.engine.attribution import explain
from lrp_domains.core.engine.result import Explanation
from lrp_domains.core.engine.scope import LRPCoverageError, Scope

__all__ = [
    "BASE_RULES",
    "Composite",
    "Explanation",
    "LRPCoverageError",
    "MergeBatchNorm",
    "Scope",
    "composites",
    "explain",
    "rules",
]
