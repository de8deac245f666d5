"""What each example explains: one resolver for every explainer.

A target is None (the predicted class: the argmax of the output), an index, a label name (with
``labels``), one index or name per example, or a callable ``output -> (N,)`` (e.g. contrastive
``lambda out: out[:, 1] - out[:, 0]``). :func:`resolve_targets` turns all but callables and None
into a LongTensor of per-example indices on the CPU; :func:`select_target` picks the explained
values from an output.

Contrastive targets by name: ``"positive vs negative"`` explains the score of one output minus
another's (:class:`Contrast`), each side a label name or an index. The separator is ``" vs "``
(spaces around it), which no label needs; ``"A-B"`` is accepted too, but only when the text is not
itself a label and exactly one ``-`` splits it into two known labels or indices (labels such as
``"non-toxic"`` stay labels). Domains whose outputs are named otherwise (a decoder's vocabulary)
give :func:`parse_contrast` their own lookup.
"""

from __future__ import annotations

import re
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


#: The separator of a contrastive target: ``"positive vs negative"`` (also ``vs.``, any case).
CONTRAST_SEPARATOR = re.compile(r" vs\.? ", re.IGNORECASE)


class Contrast:
    """A contrastive target: ``output[:, positive] - output[:, negative]`` per example (indices into
    the flattened per-example output), e.g. one class score against another, or a token's logit
    against a foil's. ``name`` is how it was asked for (``"positive vs negative"``)."""

    def __init__(self, positive: int, negative: int, name: str | None = None) -> None:
        if positive == negative:
            raise ValueError(f"a contrast needs two different outputs; both sides of {name!r} are {positive}")
        self.positive, self.negative = int(positive), int(negative)
        self.name = name or f"{self.positive} vs {self.negative}"

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        flat = output.reshape(output.shape[0], -1)
        top = max(self.positive, self.negative)
        if min(self.positive, self.negative) < 0 or top >= flat.shape[1]:
            raise ValueError(
                f"target {self.name!r}: index {top} is out of range for an output with {flat.shape[1]} values "
                "per example"
            )
        return flat[:, self.positive] - flat[:, self.negative]

    def __repr__(self) -> str:
        return f"Contrast({self.positive}, {self.negative}, name={self.name!r})"

    def __str__(self) -> str:
        return self.name


def _side(text: str) -> int | str:
    """A contrast's side: an index when it is digits, else the name as written."""
    return int(text.strip()) if text.strip().isdigit() else text


def parse_contrast(
    text: str,
    lookup: Callable[[int | str], int],
    strip: bool = True,
    known: Callable[[str], bool] | None = None,
    dash: bool = True,
) -> Contrast | None:
    """The :class:`Contrast` that ``text`` asks for, or None when it asks for none.

    ``"A vs B"`` (``" vs "`` with its spaces) always asks for one: each side is looked up with
    ``lookup`` (digits as an index), and an unknown side is an error naming it. ``"A-B"`` asks for
    one only when exactly one ``-`` splits ``text`` into two sides that ``lookup`` knows; two such
    splits are an error asking for ``vs``. ``known(text)``: whether ``text`` is itself a name (then
    it is no contrast). ``strip``: strip the sides' surrounding spaces (labels; a decoder's tokens
    keep theirs: ``" Paris vs  London"`` compares ``" Paris"`` with ``" London"``). ``dash=False``:
    only ``vs`` (a vocabulary is large enough that a hyphenated text splits into two tokens by chance)."""
    if known is not None and known(text):
        return None
    parts = CONTRAST_SEPARATOR.split(text, maxsplit=1)
    if len(parts) == 2:
        sides = [part.strip() if strip else part for part in parts]
        if not all(side.strip() for side in sides):
            raise ValueError(
                f"target {text!r}: give a name or index on both sides of 'vs' (e.g. 'positive vs negative')"
            )
        return Contrast(lookup(_side(sides[0])), lookup(_side(sides[1])), text)
    found: list[tuple[int, int]] = []
    for at in (m.start() for m in re.finditer("-", text)) if dash else ():
        left, right = text[:at], text[at + 1 :]
        left, right = (left.strip(), right.strip()) if strip else (left, right)
        if not left.strip() or not right.strip():
            continue
        try:
            found.append((lookup(_side(left)), lookup(_side(right))))
        except (ValueError, TypeError, KeyError):
            continue
    if len(found) > 1:
        raise ValueError(f"target {text!r} splits at '-' in {len(found)} ways; write it as 'A vs B'")
    return Contrast(*found[0], text) if found else None


def _label_contrast(text: str, labels: Sequence[str] | None) -> Contrast | None:
    names = [str(name) for name in labels or []]

    def known(name: str) -> bool:
        return name in names or sum(other.casefold() == name.casefold() for other in names) == 1

    def lookup(side: int | str) -> int:
        if isinstance(side, str) and names and not known(side):
            raise ValueError(f"target {text!r}: unknown label {side!r}; this model's labels are {names}")
        return label_index(side, names)

    return parse_contrast(text, lookup, known=known)


def resolve_targets(target: Target, n: int, labels: Sequence[str] | None = None) -> torch.Tensor | Callable | None:
    """None and callables as they are; a contrastive text (``"positive vs negative"``, see
    :func:`parse_contrast`) as a :class:`Contrast`; anything else as ``n`` per-example indices
    (LongTensor, CPU)."""
    if target is None or callable(target):
        return target
    if isinstance(target, str) and (contrast := _label_contrast(target, labels)) is not None:
        return contrast
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
        if target.dtype == torch.long and target.device.type == "cpu":
            return target  # what .to would hand back anyway, without its dispatch
        return target.detach().to("cpu", torch.long)  # integer indices already: no per-example Python work
    else:
        values = list(target.tolist() if hasattr(target, "tolist") else target)
    if len(values) != n:
        raise ValueError(
            f"per-example targets: got {len(values)} for {n} examples; give one per example, or a single one"
        )
    if any(isinstance(v, str) and _label_contrast(v, labels) is not None for v in values):
        raise ValueError("a contrastive target ('A vs B') is one for all examples; give it once, not per example")
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
        if target.numel() <= 64:  # a few: in Python, without tensor operations
            values = target.tolist()
            low, high = min(values), max(values)
        else:
            low, high = (int(v) for v in torch.aminmax(target))  # targets live on the CPU: no device sync
        if low < 0 or high >= flat.shape[1]:
            raise ValueError(
                f"target {low if low < 0 else high} is out of range for an output with {flat.shape[1]} values "
                "per example"
            )
        index = target if target.device == output.device else target.to(output.device, non_blocking=True)
    return flat.gather(1, index[:, None])[:, 0], index
