"""``explain``: LRP relevance of a model's inputs in one forward and one backward pass."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Union

import torch
from torch import nn

from lrp_domains.core import composites
from lrp_domains.core.composite import Composite
from lrp_domains.core.result import Explanation

Target = Union[None, int, Sequence[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    for tensors in (model.parameters(), model.buffers()):
        for tensor in tensors:
            return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter, if any."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return None


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode for the block; give each its own mode back afterwards."""
    training = {module: module.training for module in model.modules()}
    try:
        model.eval()
        yield
    finally:
        for module, mode in training.items():
            module.training = mode


def resolve_composite(composite: str | Composite, **kwargs: object) -> Composite:
    """A :class:`Composite` from a name (see :func:`lrp_domains.composites.names`) or itself."""
    if isinstance(composite, Composite):
        if kwargs:
            raise TypeError("keyword arguments are for named composites; configure a Composite directly")
        return composite
    if isinstance(composite, str):
        return composites.get(composite, **kwargs)
    raise TypeError(f"composite must be a name or a Composite, got {type(composite).__name__}")


def _prepare_inputs(model: nn.Module, inputs: object, device: torch.device | str | None) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        try:
            inputs = torch.as_tensor(inputs)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"inputs must be a tensor or array-like, got {type(inputs).__name__}") from error
    if inputs.dim() == 0:
        raise ValueError("inputs must have a batch dimension first, got a scalar")
    home = model_device(model)
    if device is not None:
        wanted = torch.device(device)
        same_index = wanted.index is None or home.index is None or wanted.index == home.index
        if wanted.type != home.type or not same_index:
            raise ValueError(
                f"the model is on {home} but device={wanted}; move it first with model.to('{wanted}') "
                "(explain never moves a model: it is returned unchanged)"
            )
    dtype = model_dtype(model)
    if dtype is not None and inputs.dtype != dtype:
        inputs = inputs.to(dtype)
    elif not inputs.is_floating_point():
        inputs = inputs.to(torch.get_default_dtype())
    return inputs.to(home)


def _targets(target: Target, n: int) -> torch.Tensor | Callable | None:
    if target is None or callable(target):
        return target
    if isinstance(target, bool):
        raise TypeError("target must be an int, a sequence of ints, a LongTensor, a callable or None")
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long)
    indices = torch.as_tensor(target)
    if indices.is_floating_point() or indices.dim() != 1 or indices.shape[0] != n:
        raise ValueError(
            f"per-example targets must be {n} integers (one per example), got shape {tuple(indices.shape)} "
            f"of {indices.dtype}"
        )
    return indices.long().cpu()


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


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    composite: str | Composite = "epsilon",
    *,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    strict: bool = False,
    progress: bool = False,
    hypothetical: bool = False,
) -> Explanation:
    """LRP relevance of ``inputs`` for one output of ``model`` per example.

    One forward and one backward pass per batch: every rule is a modified gradient, relevance
    is ``input x modified gradient`` (plus what input-layer rules write directly), seeded with 1
    at the explained output so that relevance sums to the explained value minus what biases and
    stabilizers absorb (``delta``).

    Parameters
    ----------
    model:
        Any ``nn.Module``; it is explained in eval mode and returned unchanged.
    inputs:
        ``(N, ...)``; integer/boolean inputs (one-hot) are cast to the model's dtype.
    target:
        None (the predicted class: argmax of the output), an int, one index per example, or a
        callable ``output -> (N,)`` (e.g. contrastive ``lambda out: out[:, 1] - out[:, 0]``).
    composite:
        A name from :func:`lrp_domains.composites.names` or a :class:`Composite`.
    batch_size:
        Examples per forward/backward pass (default: all at once). Results do not depend on it.
    device:
        Where to compute; the model must already be there (default: the model's device).
    strict:
        Raise :class:`~lrp_domains.core.scope.LRPCoverageError` naming each operation without a
        rule, instead of warning.
    progress:
        Show a progress bar over batches.
    hypothetical:
        Also return :attr:`Explanation.hypothetical`: what each input entry would receive at
        value 1 (one-hot inputs: every base at every position).
    """
    composite = resolve_composite(composite)
    data = _prepare_inputs(model, inputs, device)
    targets = _targets(target, data.shape[0])
    parts: list[tuple[torch.Tensor, ...]] = []
    with eval_mode(model), torch.enable_grad(), composite.context(model) as scope:
        scope.capture_hypothetical = hypothetical
        for batch, batch_target in batches(data, targets, batch_size, progress, "explain"):
            parts.append(_explain_batch(model, scope, batch, batch_target, strict))
    relevance, output, index, explained, units = (
        None if parts[0][i] is None else parts[0][i] if len(parts) == 1 else torch.cat([p[i] for p in parts])
        for i in range(5)
    )
    home = inputs.device if isinstance(inputs, torch.Tensor) else relevance.device
    relevance = relevance.to(home)
    total = relevance.reshape(len(relevance), -1).sum(1).to(explained.dtype)
    delta = explained.to(home) - total
    if composite.conserves:
        _warn_on_large_delta(delta, explained.to(home), total)
    return Explanation(relevance, output, index, explained, delta, None if units is None else units.to(home))


#: ``|delta|`` above this share of ``|explained| + |sum of relevance|`` is reported.
DELTA_WARNING = 0.5


def _warn_on_large_delta(delta: torch.Tensor, explained: torch.Tensor, total: torch.Tensor) -> None:
    # Per-example vectors: numpy on the CPU is cheaper than a string of tiny torch calls.
    delta, explained, total = (t.detach().cpu().double().numpy() for t in (delta, explained, total))
    if (abs(delta) > DELTA_WARNING * (abs(explained) + abs(total))).any():
        # A constant message, so that Python shows it once per call site rather than per call.
        warnings.warn(
            f"some explanations lost or gained more than {DELTA_WARNING:.0%} of their relevance (see "
            ".delta): biases absorb relevance, so a large delta means biases dominate these outputs, or "
            "a layer lacks a conserving rule (strict=True names uncovered operations).",
            stacklevel=3,
        )


def batches(data: torch.Tensor, targets: torch.Tensor | Callable | None, batch_size: int | None, progress: bool,
            desc: str) -> Iterator[tuple[torch.Tensor, torch.Tensor | Callable | None]]:
    """``(inputs, targets)`` per batch of ``batch_size`` examples (all at once when None), with
    an optional progress bar."""
    n = data.shape[0]
    size = n if batch_size is None else int(batch_size)
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, n, size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    for start in starts:
        part = targets[start:start + size] if isinstance(targets, torch.Tensor) else targets
        yield data[start:start + size], part


def _explain_batch(model, scope, batch, target, strict):
    (leaf,) = scope.track(batch)
    output = model(leaf)
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"explain needs a model that returns a tensor, got {type(output).__name__}; wrap the model "
            "so that forward returns the logits"
        )
    scope.check(strict)
    explained, index = select_target(output, target)
    anchor = scope.anchor(leaf)
    wrt = [leaf] if anchor is None else [leaf, anchor]
    if explained.requires_grad:
        grads = torch.autograd.grad(explained.sum(), wrt, allow_unused=True)
    else:  # every path was stopped (or the output ignores the input): no relevance arrives
        grads = [None] * len(wrt)
    relevance = leaf.detach() * grads[0] if grads[0] is not None else torch.zeros_like(leaf)
    if anchor is not None and grads[1] is not None:
        relevance = relevance + grads[1]
    units = scope.hypothetical(leaf, grads[0]).detach() if scope.capture_hypothetical else None
    return relevance.detach(), output.detach(), index, explained.detach(), units
