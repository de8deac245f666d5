"""The default CNN's data splits, regenerated from the seeds in its sidecar, and its evaluation."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from lrp_domains.bench.data.synthetic import SyntheticDataset, make_dataset
from lrp_domains.bio.sequences.synthetic_cnn import DATA, GENERATOR, SIDECAR_PATH, read_sidecar
from lrp_domains.evaluate.ground_truth import roc_auc

__all__ = ["benchmark_data", "evaluate_classifier"]


def _split_settings(split: str) -> dict[str, int]:
    if split not in DATA:
        raise ValueError(f"split must be one of {sorted(DATA)}, got {split!r}")
    settings = dict(DATA[split])
    if SIDECAR_PATH.exists():
        recorded = read_sidecar().get("data", {}).get("splits", {}).get(split)
        if recorded:
            settings = {"seed": int(recorded["seed"]), "n": int(recorded["n"])}
    return settings


@lru_cache(maxsize=4)
def _generate(n: int, seed: int) -> SyntheticDataset:
    return make_dataset(n, seed=seed, **GENERATOR)


def benchmark_data(split: str = "test", n: int | None = None) -> SyntheticDataset:
    """The ``"train"``, ``"validation"`` or ``"test"`` data the shipped model was trained/evaluated on,
    regenerated from the seeds and sizes in the sidecar (:data:`DATA` without one).

    ``n`` takes the first ``n`` sequences of the split (the same sequences for every ``n``; the split is
    generated whole first, then cut). Generating the 20,000 training sequences takes a few seconds.
    """
    settings = _split_settings(split)
    data = _generate(settings["n"], settings["seed"])
    if n is None:
        return data.subset(slice(None))
    if not 1 <= n <= len(data):
        raise ValueError(f"n must be in 1..{len(data)} for the {split} split, got {n}")
    return data.subset(slice(0, n))


@torch.no_grad()
def evaluate_classifier(model: nn.Module, data: SyntheticDataset, batch_size: int = 1000) -> dict[str, float]:
    """Accuracy (logit > 0) and AUROC of ``model`` on ``data`` (model put in eval mode), plus ``n``."""
    model.eval()
    device = next(model.parameters()).device
    logits = torch.cat(
        [model(data.onehot[i : i + batch_size].to(device)).reshape(-1).cpu() for i in range(0, len(data), batch_size)]
    )
    labels = data.labels
    accuracy = float(((logits > 0).long() == labels).double().mean())
    return {"accuracy": accuracy, "auroc": roc_auc(logits, labels), "n": len(data)}
