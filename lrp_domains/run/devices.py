"""Where a command computes: the ``--device`` values of the command line.

``auto`` takes the GPU when torch sees one (as Ray actors given a GPU always have), else the CPU;
``cpu``, ``cuda`` and ``cuda:N`` name one. A device this machine does not have is refused before
any model loads or any folder is touched.
"""

from __future__ import annotations

import torch

from lrp_domains.errors import InputError

AUTO = "auto"


def resolve_device(name: str | None) -> torch.device:
    """The device ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; None is ``auto``) stands for
    on this machine; an :class:`~lrp_domains.errors.InputError` saying what to give instead for a
    name torch does not know or a GPU it does not see."""
    text = (name or AUTO).strip().lower()
    if text == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError as error:
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from error
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(
                f"--device {name}: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is "
                "False: no GPU, or a CPU build of torch); use --device cpu"
            )
        if device.index is not None and device.index >= count:
            raise InputError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type != "cpu":
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return device
