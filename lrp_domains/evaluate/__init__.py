"""Evaluation: baseline attributions, perturbation curves and ground-truth metrics."""

from lrp_domains.evaluate.baselines import (
    gradient,
    gradient_x_input,
    integrated_gradients,
    ism,
    occlusion,
    random_attribution,
)
from lrp_domains.evaluate.ground_truth import aupr, auroc
from lrp_domains.evaluate.perturbation import (
    FRACTIONS,
    abpc,
    aopc,
    area,
    au_mse,
    curve,
    expand_groups,
    group_relevance,
    removal_masks,
)

__all__ = [
    "FRACTIONS",
    "abpc",
    "aopc",
    "area",
    "au_mse",
    "aupr",
    "auroc",
    "curve",
    "expand_groups",
    "gradient",
    "gradient_x_input",
    "group_relevance",
    "integrated_gradients",
    "ism",
    "occlusion",
    "random_attribution",
    "removal_masks",
]
