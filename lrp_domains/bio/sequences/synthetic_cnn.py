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

Trained by ``workflows/bio/train_sequence_cnn.py`` on :func:`lrp_domains.bench.data.synthetic.make_dataset` data; the
weights (``weights/synthetic-cnn.safetensors``, read with ``safetensors`` only, no pickle) come with a
JSON sidecar (:data:`SIDECAR_PATH`, read by :func:`read_sidecar`) that records the architecture, the data
seeds and sizes, the training run and the measured validation/test accuracy and AUROC.
:func:`lrp_domains.bench.data.cnn.benchmark_data` regenerates exactly the data of each split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "DATA",
    "GENERATOR",
    "SIDECAR_PATH",
    "WEIGHTS_PATH",
    "build_cnn",
    "load_default_sequence_model",
    "read_sidecar",
]

_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
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
    from lrp_domains.models import read_sidecar as read

    return read(SIDECAR_PATH if path is None else path, "python workflows/bio/train_sequence_cnn.py")


def load_default_sequence_model(device: torch.device | str | None = None) -> nn.Sequential:
    """The trained default CNN (:func:`build_cnn` + the shipped weights), in eval mode, on ``device``
    (default CPU). Checks that the sidecar describes the same architecture."""
    from safetensors.torch import load_file

    if not WEIGHTS_PATH.exists():
        raise FileNotFoundError(
            f"no weights at {WEIGHTS_PATH}; train them with `python workflows/bio/train_sequence_cnn.py`"
        )
    model = build_cnn()
    if SIDECAR_PATH.exists():
        recorded = read_sidecar().get("architecture")
        if recorded is not None and recorded != repr(model):
            raise RuntimeError(
                f"{SIDECAR_PATH.name} describes a different architecture than build_cnn(); retrain with "
                "`python workflows/bio/train_sequence_cnn.py`"
            )
    model.load_state_dict(load_file(str(WEIGHTS_PATH)), strict=True)
    model.eval()
    if device is not None:
        model.to(device)
    return model
