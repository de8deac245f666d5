"""Tensors made from a layer's parameters alone (``W+``, ``W + gamma W+``, weights stacked for one
transposed product), made once per call of the engine (inside :func:`kept`) rather than once per
batch, while those parameters are the same unmodified tensors.

On a GPU these small operations are a fair part of a rule's work: each is a kernel launch per layer
per batch, nine for a gamma layer. Nothing is kept between calls: an edit in place through
``.data`` (which PyTorch gives a version counter of its own) would go unseen, and an explanation
must never come from stale weights. Within a call a kept tensor is made again when a source is
replaced, changed in place (its version counter), moved or cast, or freed, and when the kept tensor
itself was changed in place; nothing is kept while autograd records through a source (a rule
evaluated with gradients on, whose result must carry them), and at most :data:`LIMIT_BYTES` are
kept (least recently used first out).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Literal

import torch

#: The most bytes kept, over all layers (the parameters of a large model's gamma layers would
#: otherwise be held twice more).
LIMIT_BYTES = 256 * 2**20

_State = tuple
_KEPT: OrderedDict[tuple, tuple[tuple[_State, ...], _State, torch.Tensor]] = OrderedDict()
_kept_bytes = 0
_OTHERS: list[Callable[[], None]] = []
_depth = 0  # how many kept() blocks are open, in any thread: a call ending in one thread may make
# another thread's call make its tensors again, never use stale ones


def _state(tensor: torch.Tensor, ident: tuple | None = None) -> _State | None:
    """What identifies a tensor's current contents: a weak reference (a tensor freed and another
    made in its place is never taken for it; with ``ident``, freeing it drops that entry), storage,
    version counter, dtype and device; None for tensors without them (inference-mode or meta
    tensors), which are never kept."""
    try:
        reference = weakref.ref(tensor) if ident is None else weakref.ref(tensor, lambda _: _drop(ident))
        return (reference, tensor.data_ptr(), tensor._version, tensor.dtype, tensor.device)
    except (RuntimeError, TypeError, NotImplementedError):
        return None


def _unchanged(state: _State, tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is the very tensor ``state`` was taken of, with the same contents (compared
    field by field: no new weak reference per question)."""
    if state[0]() is not tensor:
        return False
    try:
        return (
            state[1] == tensor.data_ptr()
            and state[2] == tensor._version
            and state[3] == tensor.dtype
            and state[4] == tensor.device
        )
    except (RuntimeError, TypeError, NotImplementedError):
        return False


class _Kept:
    """The block :func:`kept` opens (a class rather than a generator: entered once per call, where
    one example at a time makes every microsecond show)."""

    def __enter__(self) -> None:
        global _depth
        _depth += 1

    def __exit__(self, *exc: object) -> Literal[False]:
        global _depth
        _depth -= 1
        if _depth == 0:
            clear()
        return False


_BLOCK = _Kept()


def kept() -> _Kept:
    """Keep derived tensors for the block (one call of the engine, all its batches); forget them
    all when the outermost such block ends."""
    return _BLOCK


def derived(key: Hashable, sources: Sequence[torch.Tensor], make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``make()``, a tensor computed from ``sources`` alone (``key`` says how, with any parameter
    of the computation), kept inside :func:`kept` while every source is unchanged (module
    docstring). Callers must not change the result in place (a result found changed is made again)."""
    global _kept_bytes
    if not _depth or (torch.is_grad_enabled() and any(source.requires_grad for source in sources)):
        return make()
    ident = (key, *(id(source) for source in sources))
    kept = _KEPT.get(ident)
    if kept is not None:
        states, own, value = kept
        if all(_unchanged(state, source) for state, source in zip(states, sources)) and _unchanged(own, value):
            _KEPT.move_to_end(ident)
            return value
        _forget(ident)
    value = make()
    states_now = [_state(source, ident) for source in sources]
    own_now = _state(value)
    size = value.numel() * value.element_size()
    if own_now is None or any(state is None for state in states_now) or size > LIMIT_BYTES:
        return value
    _KEPT[ident] = (tuple(states_now), own_now, value)  # type: ignore[arg-type]  # None ruled out above
    _kept_bytes += size
    while _kept_bytes > LIMIT_BYTES and _KEPT:
        _forget(next(iter(_KEPT)))
    return value


def _drop(ident: tuple) -> None:
    """A source of ``ident``'s tensor was freed: its kept tensor goes too."""
    _forget(ident)


def _forget(ident: tuple) -> None:
    global _kept_bytes
    entry = _KEPT.pop(ident, None)  # a weak reference's callback may have taken it already
    if entry is not None:
        _kept_bytes -= entry[2].numel() * entry[2].element_size()


def clear() -> None:
    """Forget every kept tensor (and what the caches registered with :func:`on_clear` keep)."""
    global _kept_bytes
    _KEPT.clear()
    _kept_bytes = 0
    for forget in _OTHERS:
        forget()


def active() -> bool:
    """Whether a :func:`kept` block is open: other per-call caches keep their tensors only then."""
    return _depth > 0


def on_clear(forget: Callable[[], None]) -> None:
    """Have ``forget`` called whenever the kept tensors are forgotten (the end of a call)."""
    _OTHERS.append(forget)


def kept_bytes() -> int:
    """Bytes kept now."""
    return _kept_bytes
