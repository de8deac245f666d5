"""The project's default DNA sequence model: a small CNN trained on the synthetic motif benchmark.

The model (:func:`build_cnn`) is one ``nn.Sequential`` of plain ``torch.nn`` modules, so every LRP rule
applies per module and each BatchNorm can be merged into the convolution before it
(:class:`~lrp_domains.core.canonizers.MergeBatchNorm`)::

    Conv1d(4, 64, 19, padding=9) -> BatchNorm1d -> ReLU -> MaxPool1d(4)
    Conv1d(64, 64, 7, padding=3) -> BatchNorm1d -> ReLU -> MaxPool1d(4)
    Conv1d(64, 64, 5, padding=2) -> BatchNorm1d -> ReLU -> AdaptiveMaxPool1d(1)
    Flatten -> Linear(64, 64) -> ReLU -> Dropout(0.2) -> Linear(64, 1)

Input: one-hot DNA ``(N, 4, L)``, rows A, C, G, T, length last (trained on ``L = 200``; the global max
pooling accepts any ``L >= 16``). Output: ``(N, 1)``, one logit for "a motif is planted" (sigmoid for the
probability). With one output, ``explain(model, x)`` explains that logit for every sequence, positive or
not.

Trained by ``bio/train_sequence_cnn.py`` on :func:`lrp_domains.bio.synthetic.make_dataset` data; the
weights (``weights/synthetic-cnn.safetensors``, read with ``safetensors`` only, no pickle) come with a
JSON sidecar (:data:`SIDECAR_PATH`, read by :func:`read_sidecar`) that records the architecture, the data
seeds and sizes, the training run and the measured validation/test accuracy and AUROC.
:func:`benchmark_data` regenerates exactly the data of each split.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lrp_domains.bio.synthetic import SyntheticDataset, make_dataset

__all__ = [
    "DATA",
    "SIDECAR_PATH",
    "WEIGHTS_PATH",
    "auroc",
    "benchmark_data",
    "build_cnn",
    "evaluate_classifier",
    "load_default_sequence_model",
    "read_sidecar",
]

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The shipped weights (state dict of :func:`build_cnn`, float32, safetensors).
WEIGHTS_PATH: Path = _WEIGHTS_DIR / "synthetic-cnn.safetensors"
#: The JSON sidecar of :data:`WEIGHTS_PATH`.
SIDECAR_PATH: Path = _WEIGHTS_DIR / "synthetic-cnn.json"

#: How each split is generated: ``make_dataset(n, seed=seed, **GENERATOR)``. The training script uses
#: these (its ``--n-*`` options may change the sizes; the sidecar records what was used).
DATA: dict[str, dict[str, int]] = {
    "train": {"seed": 1, "n": 100000},
    "validation": {"seed": 2, "n": 2000},
    "test": {"seed": 3, "n": 2000},
}
#: The generator settings shared by all splits.
GENERATOR: dict[str, Any] = {"length": 200, "positive_fraction": 0.5, "motifs_per_sequence": (1, 3)}


def build_cnn(dropout: float = 0.2) -> nn.Sequential:
    """The default sequence CNN, untrained (architecture in the module docstring; about 58k parameters)."""
    return nn.Sequential(
        nn.Conv1d(4, 64, kernel_size=19, padding=9),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.MaxPool1d(4),
        nn.Conv1d(64, 64, kernel_size=7, padding=3),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.MaxPool1d(4),
        nn.Conv1d(64, 64, kernel_size=5, padding=2),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.AdaptiveMaxPool1d(1),
        nn.Flatten(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(64, 1),
    )


def read_sidecar(path: str | Path | None = None) -> dict[str, Any]:
    """The sidecar JSON of the shipped weights (or of ``path``) as a dict."""
    path = SIDECAR_PATH if path is None else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no sidecar at {path}; train the model with `python bio/train_sequence_cnn.py`")
    return json.loads(path.read_text())


def load_default_sequence_model(device: torch.device | str | None = None) -> nn.Sequential:
    """The trained default CNN (:func:`build_cnn` + the shipped weights), in eval mode, on ``device``
    (default CPU). Checks that the sidecar describes the same architecture."""
    from safetensors.torch import load_file

    if not WEIGHTS_PATH.exists():
        raise FileNotFoundError(
            f"no weights at {WEIGHTS_PATH}; train them with `python bio/train_sequence_cnn.py`"
        )
    model = build_cnn()
    if SIDECAR_PATH.exists():
        recorded = read_sidecar().get("architecture")
        if recorded is not None and recorded != repr(model):
            raise RuntimeError(
                f"{SIDECAR_PATH.name} describes a different architecture than build_cnn(); retrain with "
                "`python bio/train_sequence_cnn.py`"
            )
    model.load_state_dict(load_file(str(WEIGHTS_PATH)), strict=True)
    model.eval()
    if device is not None:
        model.to(device)
    return model


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


def auroc(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U, ties count half)."""
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64).ravel()
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).ravel().astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.arange(1, len(s) + 1)
    unique, inverse = np.unique(s, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks, minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique))
    ranks = (sums / counts)[inverse]
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


@torch.no_grad()
def evaluate_classifier(model: nn.Module, data: SyntheticDataset, batch_size: int = 1000) -> dict[str, float]:
    """Accuracy (logit > 0) and AUROC of ``model`` on ``data`` (model put in eval mode), plus ``n``."""
    model.eval()
    device = next(model.parameters()).device
    logits = torch.cat([
        model(data.onehot[i:i + batch_size].to(device)).reshape(-1).cpu()
        for i in range(0, len(data), batch_size)
    ])
    labels = data.labels
    accuracy = float(((logits > 0).long() == labels).double().mean())
    return {"accuracy": accuracy, "auroc": auroc(logits, labels), "n": len(data)}
