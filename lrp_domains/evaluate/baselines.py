"""Baseline attributions with the call shape of :func:`lrp_domains.explain`.

``gradient`` (saliency), ``gradient_x_input``, ``integrated_gradients`` (Sundararajan et al.
2017), ``occlusion`` (Zeiler & Fergus 2014), ``ism`` (in-silico mutagenesis for one-hot
sequences) and ``random_attribution``. Each returns an :class:`~lrp_domains.Explanation` whose
``delta`` is the explained value minus the summed attribution (for integrated gradients with a
zero-output baseline it measures the completeness error).

The gradient methods take ``explain``'s hooks: keyword inputs (a mapping, ``model(**inputs)``:
attribution for its floating-point entries, token ids and masks pass through), ``output`` (which
tensor of the model's output is explained), ``sources`` (modules whose outputs are where
attribution is read, e.g. a token model's word embedding: :attr:`Explanation.sources`) and
targets by index, name (``labels``), per example or callable. The token baselines of
:mod:`lrp_domains.evaluate.text` are these, read at the word embedding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from lrp_domains.core.engine.attribution import (
    Inputs,
    OutputFn,
    Sources,
    _source_names,
    batches,
    default_output,
    eval_mode,
    prepare_inputs,
)
from lrp_domains.core.engine.result import Explanation
from lrp_domains.core.engine.targets import Target, resolve_targets, select_target

#: ``fn(model, batch, target_batch) -> Explanation`` of one batch.
BatchAttribution = Callable[[nn.Module, Inputs, object], Explanation]


def _run(
    model: nn.Module,
    inputs: Inputs,
    target: Target,
    batch_size: int | None,
    device: torch.device | str | None,
    progress: bool,
    fn: BatchAttribution,
    name: str,
    labels: Sequence[str] | None = None,
    keywords: bool = False,
) -> Explanation:
    """The batching loop: ``fn`` per batch in eval mode with gradients on; the result on the
    inputs' device. ``keywords``: ``fn`` takes mappings of keyword inputs too."""
    data = prepare_inputs(model, inputs, device)
    if not keywords and not isinstance(data, torch.Tensor):
        raise TypeError(f"{name} takes tensor inputs")
    n = next(iter(data.values())).shape[0] if isinstance(data, Mapping) else data.shape[0]
    work = batches(data, resolve_targets(target, n, labels), batch_size)
    if progress:
        from tqdm.auto import tqdm

        work = tqdm(work, desc=name, unit="batch", total=-(-n // (batch_size or n)))
    with eval_mode(model), torch.enable_grad():
        result = Explanation.concatenate([fn(model, batch, batch_target) for batch, batch_target in work])
    return result.to(inputs.device) if isinstance(inputs, torch.Tensor) else result


class _SourceOutputs:
    """Forward hooks that replace each source module's output by a leaf, where the gradient is read.

    ``path`` None: the leaf holds the output itself, and the outputs are recorded (``seen``, per
    module one per call); ``path = (alpha, baseline)``: the leaf is the point ``alpha`` of the
    straight path from ``baseline`` to the recorded output (integrated gradients)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.model, self.names = model, names
        self.path: tuple[float, float | torch.Tensor] | None = None
        self.seen: dict[str, list[torch.Tensor]] = {}
        self.leaves: dict[str, list[torch.Tensor]] = {}

    @contextlib.contextmanager
    def hooked(self) -> Iterator[_SourceOutputs]:
        modules = dict(self.model.named_modules())
        handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.names]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def forward(self, path: tuple[float, float | torch.Tensor] | None) -> None:
        """Before a forward: record the outputs (None; clears what was recorded) or read a path point."""
        self.path, self.leaves = path, {}
        if path is None:
            self.seen = {}

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, out: object) -> torch.Tensor:
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"sources: module {name!r} returns {type(out).__name__}, not a tensor")
            calls = self.leaves.setdefault(name, [])
            if self.path is None:
                value = out.detach()
                self.seen.setdefault(name, []).append(value)
            else:
                alpha, baseline = self.path
                actual = self.seen[name][len(calls)]
                reference = _reference(baseline, actual)
                value = reference + alpha * (actual - reference)
            leaf = value.detach().requires_grad_(True) if torch.is_grad_enabled() else value
            calls.append(leaf)
            return leaf

        return hook

    def flat(self) -> list[tuple[str, torch.Tensor]]:
        """The latest forward's leaves, ``(module name, leaf)`` in call order per module."""
        return [(name, leaf) for name in self.names for leaf in self.leaves.get(name, [])]


def _reference(baseline: float | torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(baseline, dtype=value.dtype, device=value.device).expand_as(value)


def _features(batch: Inputs) -> tuple[list[str], list[torch.Tensor]]:
    """The attributed inputs: the floating-point entries of keyword inputs, or the tensor itself."""
    if isinstance(batch, Mapping):
        keys = [key for key, value in batch.items() if value.is_floating_point()]
        return keys, [batch[key] for key in keys]
    return [], [batch]


def _forward(
    model: nn.Module, batch: Inputs, keys: list[str], values: list[torch.Tensor], output_fn: OutputFn | None
) -> torch.Tensor:
    raw = model(**{**batch, **dict(zip(keys, values))}) if isinstance(batch, Mapping) else model(values[0])
    return (output_fn or default_output)(raw, batch)


def _gradients(explained: torch.Tensor, wrt: list[torch.Tensor]) -> list[torch.Tensor]:
    """d(sum of explained)/d(each of ``wrt``); zeros for tensors the output does not depend on."""
    if not wrt:
        raise ValueError(
            "nothing to attribute: the inputs have no floating-point entry (token ids?) and no "
            "sources are given; pass sources=[the embedding module's name]"
        )
    if explained.requires_grad:
        grads = torch.autograd.grad(explained.sum(), wrt, allow_unused=True)
    else:
        grads = [None] * len(wrt)
    return [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]


def _assemble(
    batch: Inputs, keys: list[str], per_input: list[torch.Tensor], per_call: list[tuple[str, torch.Tensor]]
) -> tuple[object, dict[str, torch.Tensor]]:
    """The relevance in the inputs' structure and per source module (summed over its calls)."""
    relevance = dict(zip(keys, per_input)) if isinstance(batch, Mapping) else per_input[0]
    read: dict[str, torch.Tensor] = {}
    for name, value in per_call:
        read[name] = read[name] + value if name in read else value
    return relevance, read


def _gradient_method(times_input: bool, output_fn: OutputFn | None, names: list[str]) -> BatchAttribution:
    """The batch function of the gradient (``times_input``: gradient x input) with the hooks."""

    def batch_fn(model: nn.Module, batch: Inputs, target: object) -> Explanation:
        keys, values = _features(batch)
        leaves = [v.detach().requires_grad_(True) for v in values]
        sources = _SourceOutputs(model, names)
        with sources.hooked():
            sources.forward(None)
            output = _forward(model, batch, keys, leaves, output_fn)
            explained, index = select_target(output, target)
            calls = sources.flat()
            grads = _gradients(explained, leaves + [leaf for _, leaf in calls])
        at_inputs, at_sources = grads[: len(leaves)], grads[len(leaves) :]
        if times_input:
            at_inputs = [v * g for v, g in zip(values, at_inputs)]
            at_sources = [leaf.detach() * g for (_, leaf), g in zip(calls, at_sources)]
        relevance, read = _assemble(batch, keys, at_inputs, [(n, g) for (n, _), g in zip(calls, at_sources)])
        return Explanation.build(relevance, output.detach(), index, explained.detach(), None, read)

    return batch_fn


def gradient(
    model: nn.Module,
    inputs: Inputs,
    target: Target = None,
    *,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    output: OutputFn | None = None,
    sources: Sources = None,
    labels: Sequence[str] | None = None,
) -> Explanation:
    """The plain gradient of the explained output (saliency, Simonyan et al. 2014). ``inputs``,
    ``target``, ``output``, ``sources`` and ``labels`` as for :func:`lrp_domains.explain`; the
    gradient at each source module's output is in :attr:`Explanation.sources`."""
    fn = _gradient_method(False, output, _source_names(model, sources))
    return _run(model, inputs, target, batch_size, device, progress, fn, "gradient", labels, keywords=True)


def gradient_x_input(
    model: nn.Module,
    inputs: Inputs,
    target: Target = None,
    *,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    output: OutputFn | None = None,
    sources: Sources = None,
    labels: Sequence[str] | None = None,
) -> Explanation:
    """Input times gradient (Shrikumar et al. 2016); with ``sources``, each source module's output
    times the gradient there (a token model's word embedding: :mod:`lrp_domains.evaluate.text`).
    Hooks as for :func:`lrp_domains.explain`."""
    fn = _gradient_method(True, output, _source_names(model, sources))
    return _run(model, inputs, target, batch_size, device, progress, fn, "gradient x input", labels, keywords=True)


def integrated_gradients(
    model: nn.Module,
    inputs: Inputs,
    target: Target = None,
    *,
    baseline: float | torch.Tensor = 0.0,
    steps: int = 32,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    output: OutputFn | None = None,
    sources: Sources = None,
    labels: Sequence[str] | None = None,
) -> Explanation:
    """Integrated gradients (Sundararajan et al. 2017), midpoint Riemann sum with ``steps``
    points on the straight path from ``baseline`` to the input; ``steps`` forward and backward
    passes per batch (and one forward at the input). The target index is fixed at the input's
    (argmax at the input).

    Hooks as for :func:`lrp_domains.explain`. With ``sources`` the path runs in each source
    module's output (from ``baseline`` to its output at the input), together with the
    floating-point inputs; ``baseline`` (a number, or a tensor broadcast to each) applies to all."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    names, output_fn = _source_names(model, sources), output

    def batch_fn(model: nn.Module, batch: Inputs, target: object) -> Explanation:
        keys, values = _features(batch)
        references = [_reference(baseline, v) for v in values]
        tracked = _SourceOutputs(model, names)
        with tracked.hooked():
            with torch.no_grad():
                tracked.forward(None)  # at the input: the target index and each source's output
                output = _forward(model, batch, keys, values, output_fn)
            _, index = select_target(output, target)
            fixed = index if index is not None else target
            calls = tracked.flat()
            totals = [torch.zeros_like(v) for v in values] + [torch.zeros_like(leaf) for _, leaf in calls]
            for k in range(steps):
                alpha = (k + 0.5) / steps
                points = [(r + alpha * (v - r)).detach().requires_grad_(True) for r, v in zip(references, values)]
                tracked.forward((alpha, baseline))
                explained, _ = select_target(_forward(model, batch, keys, points, output_fn), fixed)
                grads = _gradients(explained, points + [leaf for _, leaf in tracked.flat()])
                for total, grad in zip(totals, grads):
                    total += grad
        explained, _ = select_target(output, fixed)
        at_inputs = [(v - r) * total / steps for v, r, total in zip(values, references, totals)]
        at_sources = []
        for (name, actual), total in zip(calls, totals[len(values) :]):
            reference = _reference(baseline, actual)
            at_sources.append((name, (actual - reference) * total / steps))
        relevance, read = _assemble(batch, keys, at_inputs, at_sources)
        return Explanation.build(relevance, output, index, explained, None, read)

    return _run(
        model, inputs, target, batch_size, device, progress, batch_fn, "integrated gradients", labels, keywords=True
    )


def occlusion(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    *,
    baseline: float = 0.0,
    dim: int | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Explanation:
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
                return Explanation.build(scores.reshape(batch.shape), output, index, explained)
            relevance = torch.zeros_like(batch)
            for j in range(batch.shape[dim]):
                occluded = batch.clone()
                occluded.select(dim, j).fill_(baseline)
                drop = explained - select_target(model(occluded), fixed)[0]
                relevance.select(dim, j).copy_(_spread(drop, batch.select(dim, j) != 0))
        return Explanation.build(relevance, output, index, explained)

    return _run(model, inputs, target, batch_size, device, progress, batch_fn, "occlusion")


def _spread(value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``value`` (per example) on the non-zero entries of each example's slice."""
    shape = (len(value),) + (1,) * (mask.dim() - 1)
    return value.reshape(shape) * mask


def ism(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    *,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Explanation:
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
        return Explanation.build(relevance, output, index, explained)

    return _run(model, inputs, target, batch_size, device, progress, batch_fn, "ism")


def random_attribution(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Explanation:
    """Standard-normal noise of the input's shape (seeded): the floor every metric is read against."""
    generator = torch.Generator().manual_seed(seed)

    def batch_fn(model, batch, target):
        with torch.no_grad():
            output = model(batch)
            explained, index = select_target(output, target)
        noise = torch.randn(batch.shape, generator=generator, dtype=torch.float64).to(batch)
        return Explanation.build(noise, output, index, explained)

    return _run(model, inputs, target, batch_size, device, progress, batch_fn, "random")
