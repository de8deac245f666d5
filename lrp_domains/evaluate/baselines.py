"""Baseline attributions with the call shape of :func:`lrp_domains.explain`.

``gradient`` (saliency), ``gradient_x_input``, ``integrated_gradients`` (Sundararajan et al.
2017), ``occlusion`` (Zeiler & Fergus 2014), ``ism`` (in-silico mutagenesis for one-hot
sequences) and ``random_attribution``. Each returns an :class:`~lrp_domains.Explanation` whose
``delta`` is the explained value minus the summed attribution (for integrated gradients with a
zero-output baseline it measures the completeness error).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lrp_domains.core.engine.attribution import batches, eval_mode, prepare_inputs
from lrp_domains.core.engine.result import Explanation
from lrp_domains.core.engine.targets import Target, resolve_targets, select_target

#: ``fn(model, batch, target_batch) -> (attribution, output, index, explained)``
BatchAttribution = Callable[[nn.Module, torch.Tensor, object], tuple]


def _run(model: nn.Module, inputs: torch.Tensor, target: Target, batch_size: int | None,
         device: torch.device | str | None, progress: bool, fn: BatchAttribution, name: str) -> Explanation:
    data = prepare_inputs(model, inputs, device)
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{name} takes tensor inputs")
    n = data.shape[0]
    parts = []
    work = batches(data, resolve_targets(target, n), batch_size)
    if progress:
        from tqdm.auto import tqdm

        work = tqdm(work, desc=name, unit="batch", total=-(-n // (batch_size or n)))
    with eval_mode(model), torch.enable_grad():
        for batch, batch_target in work:
            parts.append(fn(model, batch, batch_target))
    relevance, output, index, explained = (
        None if parts[0][i] is None else torch.cat([p[i] for p in parts]) for i in range(4)
    )
    home = inputs.device if isinstance(inputs, torch.Tensor) else relevance.device
    relevance = relevance.to(home)
    delta = explained.to(home) - relevance.reshape(n, -1).sum(1).to(explained.dtype)
    return Explanation(relevance, output, index, explained, delta)


def _gradient_batch(model: nn.Module, batch: torch.Tensor, target) -> tuple:
    leaf = batch.detach().requires_grad_(True)
    output = model(leaf)
    explained, index = select_target(output, target)
    (grad,) = torch.autograd.grad(explained.sum(), leaf)
    return grad, output.detach(), index, explained.detach()


def gradient(model: nn.Module, inputs: torch.Tensor, target: Target = None, *, batch_size: int | None = None,
             device: torch.device | str | None = None, progress: bool = False) -> Explanation:
    """The plain gradient of the explained output (saliency, Simonyan et al. 2014)."""
    return _run(model, inputs, target, batch_size, device, progress, _gradient_batch, "gradient")


def gradient_x_input(model: nn.Module, inputs: torch.Tensor, target: Target = None, *,
                     batch_size: int | None = None, device: torch.device | str | None = None,
                     progress: bool = False) -> Explanation:
    """Input times gradient (Shrikumar et al. 2016)."""

    def batch_fn(model, batch, target):
        grad, output, index, explained = _gradient_batch(model, batch, target)
        return batch * grad, output, index, explained

    return _run(model, inputs, target, batch_size, device, progress, batch_fn, "gradient x input")


def integrated_gradients(model: nn.Module, inputs: torch.Tensor, target: Target = None, *,
                         baseline: float | torch.Tensor = 0.0, steps: int = 32, batch_size: int | None = None,
                         device: torch.device | str | None = None, progress: bool = False) -> Explanation:
    """Integrated gradients (Sundararajan et al. 2017), midpoint Riemann sum with ``steps``
    points on the straight path from ``baseline`` to the input; ``steps`` forward and backward
    passes per batch. The target index is fixed at the input's (argmax at the input)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")

    def batch_fn(model, batch, target):
        reference = torch.as_tensor(baseline, dtype=batch.dtype, device=batch.device).expand_as(batch)
        with torch.no_grad():
            output = model(batch)
        _, index = select_target(output, target)
        fixed = index if index is not None else target
        total = torch.zeros_like(batch)
        for k in range(steps):
            alpha = (k + 0.5) / steps
            point = (reference + alpha * (batch - reference)).detach().requires_grad_(True)
            explained, _ = select_target(model(point), fixed)
            (grad,) = torch.autograd.grad(explained.sum(), point)
            total += grad
        explained, _ = select_target(output, fixed)
        return (batch - reference) * total / steps, output, index, explained

    return _run(model, inputs, target, batch_size, device, progress, batch_fn, "integrated gradients")


def occlusion(model: nn.Module, inputs: torch.Tensor, target: Target = None, *, baseline: float = 0.0,
              dim: int | None = None, batch_size: int | None = None, device: torch.device | str | None = None,
              progress: bool = False) -> Explanation:
    """Occlusion (Zeiler & Fergus 2014): relevance of a feature = explained output minus the
    output with that feature set to ``baseline``; one forward pass per feature. With ``dim`` (a
    non-batch dimension), whole slices along it are occluded together (the positions of a one-hot
    sequence: ``dim=2``) and the slice's score goes to its non-zero entries (the observed base)."""

    def batch_fn(model, batch, target):
        with torch.no_grad():
            output = model(batch)
            explained, index = select_target(output, target)
            fixed = index if index is not None else target
            if dim is None:
                flat = batch.reshape(len(batch), -1)
                scores = torch.zeros_like(flat)
                for j in range(flat.shape[1]):
                    occluded = flat.clone()
                    occluded[:, j] = baseline
                    scores[:, j] = explained - select_target(model(occluded.reshape(batch.shape)), fixed)[0]
                return scores.reshape(batch.shape), output, index, explained
            relevance = torch.zeros_like(batch)
            for j in range(batch.shape[dim]):
                occluded = batch.clone()
                occluded.select(dim, j).fill_(baseline)
                drop = explained - select_target(model(occluded), fixed)[0]
                relevance.select(dim, j).copy_(_spread(drop, batch.select(dim, j) != 0))
        return relevance, output, index, explained

    return _run(model, inputs, target, batch_size, device, progress, batch_fn, "occlusion")


def _spread(value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``value`` (per example) on the non-zero entries of each example's slice."""
    shape = (len(value),) + (1,) * (mask.dim() - 1)
    return value.reshape(shape) * mask


def ism(model: nn.Module, inputs: torch.Tensor, target: Target = None, *, batch_size: int | None = None,
        device: torch.device | str | None = None, progress: bool = False) -> Explanation:
    """In-silico mutagenesis for one-hot sequences ``(N, A, L)`` (Alipanahi et al. 2015): every
    single-base substitution is scored; the observed base at each position gets the explained
    output minus the mean output over the ``A - 1`` substitutions there. ``(A - 1) L`` forwards."""

    def batch_fn(model, batch, target):
        if batch.dim() != 3:
            raise ValueError(f"ism needs one-hot sequences (N, alphabet, length), got shape {tuple(batch.shape)}")
        n, alphabet, length = batch.shape
        with torch.no_grad():
            output = model(batch)
            explained, index = select_target(output, target)
            fixed = index if index is not None else target
            relevance = torch.zeros_like(batch)
            for position in range(length):
                effects = []
                for base in range(alphabet):
                    mutated = batch.clone()
                    mutated[:, :, position] = 0
                    mutated[:, base, position] = 1
                    changed = batch[:, base, position] == 0
                    score = select_target(model(mutated), fixed)[0]
                    effects.append(torch.where(changed, score, torch.full_like(score, float("nan"))))
                mean = torch.stack(effects, 1).nanmean(1)
                relevance[:, :, position] = _spread(explained - mean, batch[:, :, position] != 0)
        return relevance, output, index, explained

    return _run(model, inputs, target, batch_size, device, progress, batch_fn, "ism")


def random_attribution(model: nn.Module, inputs: torch.Tensor, target: Target = None, *, seed: int = 0,
                       batch_size: int | None = None, device: torch.device | str | None = None,
                       progress: bool = False) -> Explanation:
    """Standard-normal noise of the input's shape (seeded): the floor every metric is read against."""
    generator = torch.Generator().manual_seed(seed)

    def batch_fn(model, batch, target):
        with torch.no_grad():
            output = model(batch)
            explained, index = select_target(output, target)
        noise = torch.randn(batch.shape, generator=generator, dtype=torch.float64).to(batch)
        return noise, output, index, explained

    return _run(model, inputs, target, batch_size, device, progress, batch_fn, "random")
