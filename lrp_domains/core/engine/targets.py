"""What each example explains: one resolver for every explainer.

A target is None (the predicted class: the argmax of the output), an index, a label name (with
``labels``), one index or name per example, or a callable ``output -> (N,)`` (e.g. contrastive
``lambda out: out[:, 1] - out[:, 0]``). :func:`resolve_targets` turns all but callables and None
into a LongTensor of per-example indices on the CPU; :func:`select_target` picks the explained
values from an output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Union

import torch

Target = Union[None, int, str, Sequence[Union[int, str]], torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def label_index(label: Any, labels: Sequence[str] | None) -> int:
    """The index of ``label``: an integer as is, a name looked up in ``labels`` (exactly, else
    case-insensitively when that is unambiguous)."""
    if isinstance(label, bool):
        raise TypeError(f"a target must be an index or a label name, got {label!r}")
    if isinstance(label, str):
        names = [str(name) for name in labels or []]
        if label in names:
            return names.index(label)
        folded = [i for i, name in enumerate(names) if name.casefold() == label.casefold()]
        if len(folded) == 1:
            return folded[0]
        if not names:
            raise ValueError(f"target {label!r} is a name, but this model's outputs have no names; give an index")
        raise ValueError(f"unknown label {label!r}; this model's labels are {names}")
    if hasattr(label, "is_integer") and not float(label).is_integer():
        raise ValueError(f"a target index must be an integer, got {label!r}")
    try:
        return int(label)
    except (TypeError, ValueError):
        raise TypeError(f"a target must be an index or a label name, got {type(label).__name__} {label!r}") from None


def resolve_targets(target: Target, n: int, labels: Sequence[str] | None = None) -> torch.Tensor | Callable | None:
    """None and callables as they are; anything else as ``n`` per-example indices (LongTensor, CPU)."""
    if target is None or callable(target):
        return target
    if isinstance(target, (str, int)) or (hasattr(target, "ndim") and target.ndim == 0):
        value = target.item() if hasattr(target, "item") and not isinstance(target, (str, int)) else target
        return torch.full((n,), label_index(value, labels), dtype=torch.long)
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dim() != 1 or target.dtype == torch.bool:
            raise ValueError(
                f"per-example targets must be {n} integers (one per example), got shape "
                f"{tuple(target.shape)} of {target.dtype}"
            )
        if len(target) != n:
            raise ValueError(
                f"per-example targets: got {len(target)} for {n} examples; give one per example, or a single one"
            )
        return target.detach().to("cpu", torch.long)  # integer indices already: no per-example Python work
    else:
        values = list(target.tolist() if hasattr(target, "tolist") else target)
    if len(values) != n:
        raise ValueError(
            f"per-example targets: got {len(values)} for {n} examples; give one per example, or a single one"
        )
    return torch.tensor([label_index(v, labels) for v in values], dtype=torch.long)


def select_target(
    output: torch.Tensor, target: torch.Tensor | Callable | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The explained value per example and its index (None for callables).

    ``output`` is read as ``(N, -1)``; indices address that flattened per-example output.
    """
    n = output.shape[0]
    if callable(target):
        explained = target(output)
        if not isinstance(explained, torch.Tensor) or explained.shape != (n,):
            raise ValueError(
                f"a callable target must return one value per example, shape ({n},); got "
                f"{tuple(explained.shape) if isinstance(explained, torch.Tensor) else type(explained).__name__}"
            )
        return explained, None
    flat = output.reshape(n, -1)
    if target is None:
        index = flat.detach().argmax(dim=1)
    else:
        low, high = int(target.min()), int(target.max())  # targets live on the CPU: no device sync
        if low < 0 or high >= flat.shape[1]:
            raise ValueError(
                f"target {low if low < 0 else high} is out of range for an output with {flat.shape[1]} values "
                "per example"
            )
        index = target.to(output.device, non_blocking=True)
    return flat.gather(1, index[:, None])[:, 0], index
