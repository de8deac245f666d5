"""The LRP rules (re-exported from :mod:`lrp_domains.core.rules`)."""

from lrp_domains.core.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Identity,
    LayerRule,
    Pass,
    Rule,
    Stop,
    Uniform,
    WSquare,
    ZBox,
    ZPlus,
)

__all__ = [
    "AlphaBeta",
    "Epsilon",
    "Flat",
    "Gamma",
    "Identity",
    "LayerRule",
    "Pass",
    "Rule",
    "Stop",
    "Uniform",
    "WSquare",
    "ZBox",
    "ZPlus",
]
