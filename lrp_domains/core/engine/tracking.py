"""Where relevance is read: the tracked inputs of one forward, what input-layer rules write
directly (anchors), hypothetical contributions, and module outputs read as sources.

- Inputs: ``track(x)`` returns a leaf that requires grad; the relevance of ``x`` is
  ``x * x.grad`` plus what input-layer rules (z-box, flat, w-square) wrote to its *anchor*, a
  zero tensor of ``x``'s shape whose gradient is the directly written relevance.
- Hypothetical contributions (one-hot inputs): what each entry would receive at value 1, filed
  by input-layer rules while ``capture_hypothetical`` is set.
- Sources: named modules whose outputs become leaves (an embedding's output, a hidden layer);
  relevance stops there and is read as ``output * grad``. Outputs broadcast over the batch
  (position embeddings of shape ``(1, T, H)``) are expanded to the batch first.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

import torch


class InputTracker:
    """The inputs, anchors, hypothetical contributions and sources of one scope's forwards."""

    def __init__(self) -> None:
        self.leaves: list[torch.Tensor] = []
        self.batch_size: int | None = None
        self.capture_hypothetical = False
        self.source_names: frozenset[str] = frozenset()
        #: Source outputs made leaves in the current forward, by module name, in call order.
        self.sources: dict[str, list[torch.Tensor]] = {}
        self._anchors: dict[int, torch.Tensor] = {}
        #: Views of anchors handed to input-layer rules that see a view of an input (permuted,
        #: cropped), by id: the view (kept alive) and its anchor.
        self._views: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._hypothetical: dict[int, torch.Tensor] = {}
        self._warned: set[str] = set()

    def track(self, inputs: Sequence[torch.Tensor], batch_size: int | None = None) -> list[torch.Tensor]:
        """Register the inputs of the next forward (relevance is computed for them); returns leaves."""
        self.leaves = [x.detach().requires_grad_(True) for x in inputs]
        self._anchors, self._views, self._hypothetical, self.sources = {}, {}, {}, {}
        self.batch_size = batch_size if batch_size is not None else (inputs[0].shape[0] if inputs else None)
        return list(self.leaves)

    def read_sources(self, names: Iterable[str]) -> None:
        """Read relevance at the outputs of these modules (by name) from now on."""
        self.source_names = frozenset(names)

    # -- inputs and input-layer rules -------------------------------------------------------
    def input_of(self, x: torch.Tensor) -> torch.Tensor | None:
        """The tracked leaf that ``x`` is (or a full contiguous view of), else None."""
        for leaf in self.leaves:
            if x is leaf:
                return leaf
            if x._base is leaf and (
                # a reshape of it (the rule's relevance is reshaped back: both in one order)
                (x.is_contiguous() and leaf.is_contiguous() and x.numel() == leaf.numel())
                # the same layout (an identity view, as the ledger's taps are), contiguous or not
                or (
                    x.shape == leaf.shape
                    and x.stride() == leaf.stride()
                    and x.storage_offset() == leaf.storage_offset()
                )
            ):
                return leaf
        return None

    def viewed_input_of(self, x: torch.Tensor) -> torch.Tensor | None:
        """The tracked leaf of which ``x`` is a view holding each of its entries at most once: its
        axes in another order (``x.permute(0, 2, 1)`` of an ``(N, L, 4)`` input, as a model written
        for channels last does first), a crop (``x[:, :, 10:-10]``), a selection; else None. The
        leaf must fill its stretch of storage (contiguous in some order of its axes), as its
        anchor then does in the same layout."""
        for leaf in self.leaves:
            if x._base is leaf and _distinct_entries(leaf, leaf) and _distinct_entries(x, leaf):
                return leaf
        return None

    def sees_input(self, x: torch.Tensor) -> bool:
        """Whether a layer taking ``x`` takes a tracked input: itself, or a view of it holding each
        entry at most once (where the composite's input-layer rule applies)."""
        return self.input_of(x) is not None or self.viewed_input_of(x) is not None

    def anchor_for(self, x: torch.Tensor, describe: str) -> torch.Tensor | None:
        """Where an input-layer rule applied to ``x`` writes relevance (None: ``x`` is no input).
        For another view of an input (:meth:`viewed_input_of`), the same view of its anchor: what
        the rule writes for each entry of ``x`` reaches that entry of the input."""
        leaf = self.input_of(x)
        viewed = leaf is None and (leaf := self.viewed_input_of(x)) is not None
        if leaf is None:
            if describe not in self._warned:
                self._warned.add(describe)
                warnings.warn(
                    f"{describe} has an input-layer rule but does not see a tracked model input; relevance "
                    "it assigns to zero-valued inputs is dropped.",
                    stacklevel=5,
                )
            return None
        anchor = self._anchors.get(id(leaf))
        if anchor is None:
            anchor = self._anchors[id(leaf)] = torch.zeros_like(leaf, requires_grad=True)
        if viewed:  # the anchor has its leaf's strides (zeros_like keeps a dense layout), at offset 0
            view = anchor.as_strided(x.shape, x.stride(), x.storage_offset() - leaf.storage_offset())
            self._views[id(view)] = (view, anchor)
            return view
        return anchor

    def anchor(self, leaf: torch.Tensor) -> torch.Tensor | None:
        """The tensor collecting directly written relevance of ``leaf``, if a rule wrote any."""
        return self._anchors.get(id(leaf))

    def recorder(self, anchor: torch.Tensor) -> Callable[[torch.Tensor], None] | None:
        """While hypothetical contributions are captured: where an input-layer rule files what each
        entry of ``anchor``'s input would receive at value 1."""
        if not self.capture_hypothetical:
            return None
        viewed = self._views.get(id(anchor))
        key = id(anchor if viewed is None else viewed[1])

        def record(value: torch.Tensor) -> None:
            if viewed is not None:  # filed in the layout of the input, entry by entry
                view, base = viewed
                full = torch.zeros_like(base, dtype=value.dtype, requires_grad=False)
                full.as_strided(view.shape, view.stride(), view.storage_offset()).copy_(value)
                value = full
            self._hypothetical[key] = self._hypothetical[key] + value if key in self._hypothetical else value

        return record

    def hypothetical(self, leaf: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """Relevance each entry of ``leaf`` would get at value 1: the modified gradient for
        ``x * g`` rules, plus what input-layer rules recorded."""
        total = torch.zeros_like(leaf) if grad is None else grad.detach().clone()
        anchor = self._anchors.get(id(leaf))
        if anchor is not None and id(anchor) in self._hypothetical:
            total = total + self._hypothetical[id(anchor)].to(total.dtype)
        return total

    # -- sources ----------------------------------------------------------------------------
    def source_output(self, name: str, output: torch.Tensor) -> torch.Tensor:
        """``output`` of source module ``name`` as a leaf relevance is read from."""
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            raise TypeError(
                f"relevance is read at the output of '{name}', which must be a floating-point tensor; "
                f"it returned {type(output).__name__}"
            )
        batch = self.batch_size
        if batch and output.dim() >= 2 and output.shape[0] == 1 and batch > 1:
            output = output.expand(batch, *output.shape[1:])
        leaf = output.detach().contiguous().requires_grad_(True)
        self.sources.setdefault(name, []).append(leaf)
        return leaf


def _distinct_entries(x: torch.Tensor, leaf: torch.Tensor) -> bool:
    """Whether ``x`` (a view of ``leaf``, which fills its stretch of storage) holds each entry of
    ``leaf`` at most once and none outside it: ordered by stride, each axis steps over everything
    the axes before it span (no two indices of ``x`` share an entry), and its first and last entries
    lie in ``leaf``'s stretch. ``_distinct_entries(leaf, leaf)``: whether ``leaf`` fills it."""
    if x.numel() == 0:
        return False
    span = 0  # how far the axes so far reach, in entries
    for stride, size in sorted((stride, size) for stride, size in zip(x.stride(), x.shape) if size != 1):
        if stride <= span:
            return False
        span += stride * (size - 1)
    start = x.storage_offset() - leaf.storage_offset()
    return start >= 0 and start + span < leaf.numel()
