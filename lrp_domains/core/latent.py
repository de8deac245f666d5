"""Latent relevance: how much relevance each channel of a layer carries, and the input relevance
that flows through one channel only (Concept Relevance Propagation, Achtibat et al., "From
attribution maps to human-understandable explanations through Concept Relevance Propagation",
*Nature Machine Intelligence* 5, 1006-1019, 2023).

With LRP as a modified gradient, the relevance at any tensor ``a`` of the forward is
``a * g`` (``g``: the modified gradient arriving there), so a layer's channel relevance
``R_c = sum over positions of a_c * g_c`` comes from the same single backward pass as the input
relevance. The backward from the layer down is linear in what arrives at the layer, so the input
relevance *conditioned* on channel ``c`` (CRP, Eq. 6: relevance seeded only at ``c``) is the
backward of ``g * mask_c``; summed over all channels of a layer it is the input relevance that
flows through the layer (all of it, when every path from input to output runs through the layer).

Cost: one forward and backward for the layer's gradient, keeping the graph; then one backward
from the layer per channel, seeded with the gradient masked to that channel: about one LRP
backward of the part below the layer per channel. For an affine layer that reads the model input
(a first convolution: the filters), the layer's rule is run on each channel's slice of the layer
instead, all channels together costing about one backward of that layer. ``channel_batch`` selects
the replay strategy instead: for each chunk of channels, one forward of the network *up to the
layer* (a hook stops it there) on the batch replicated once per channel, and one backward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lrp_domains.core.composite import Composite
from lrp_domains.core.engine.attribution import (
    Inputs,
    OutputFn,
    Sources,
    _length,
    _source_names,
    batches,
    eval_mode,
    explained_output,
    prepare_inputs,
    read_relevance,
    resolve_composite,
    run_tracked,
)
from lrp_domains.core.engine.targets import Target, resolve_targets, select_target
from lrp_domains.core.traced_pairs import trace_for

if TYPE_CHECKING:
    from lrp_domains.core.engine.scope import Scope

__all__ = ["Concepts", "concept_relevance", "conditional_relevance", "explain_concepts", "layer_relevance"]


class _Stop(Exception):  # noqa: N818 - control flow, not an error
    """Raised by the layer hook to end a forward once the layer has run."""


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if hasattr(value, "to_tuple"):  # transformers' ModelOutput
        return _first_tensor(value.to_tuple())
    return None


class _Probe:
    """A hook on one module that captures its output (``at="output"``) or first input
    (``at="input"``) in each forward, and may stop the forward right there."""

    def __init__(self, model: nn.Module, layer: str, at: str) -> None:
        modules = dict(model.named_modules())
        if layer not in modules:
            near = [name for name in modules if name and (layer in name or name in layer)][:5]
            hint = f"; names like it: {near}" if near else "; see model.named_modules()"
            raise ValueError(f"layer {layer!r}: the model has no module of that name{hint}")
        if at not in ("output", "input"):
            raise ValueError(f"at must be 'output' or 'input', got {at!r}")
        self.name, self.module, self.at = layer, modules[layer], at
        self.seen: list[torch.Tensor] = []
        self.inputs: list[Any] = []
        self.stop = False
        self.handle: Any = None

    def __enter__(self) -> _Probe:
        if self.at == "output":
            self.handle = self.module.register_forward_hook(lambda m, args, out: self._capture(out, args))
        else:
            self.handle = self.module.register_forward_pre_hook(
                lambda m, args, kwargs: self._capture(args[0] if args else next(iter(kwargs.values()), None)),
                with_kwargs=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()

    def _capture(self, value: Any, args: tuple = ()) -> None:
        self.inputs.append(args[0] if args else None)
        tensor = _first_tensor(value)
        if tensor is None or not tensor.is_floating_point():
            raise TypeError(
                f"layer {self.name!r}: its {self.at} is {type(value).__name__}, not a floating-point "
                "tensor (or a tuple starting with one); name a module whose output is a tensor"
            )
        self.seen.append(tensor)
        if self.stop:
            raise _Stop

    def tensor(self, batch_size: int) -> torch.Tensor:
        """The one tensor captured in the last forward."""
        if len(self.seen) != 1:
            raise ValueError(
                f"layer {self.name!r} ran {len(self.seen)} times in one forward; name a module that "
                "runs exactly once (a module used twice has no single output to condition on)"
            )
        tensor = self.seen[0]
        if tensor.dim() < 2 or tensor.shape[0] != batch_size:
            raise ValueError(
                f"layer {self.name!r}: its {self.at} has shape {tuple(tensor.shape)}; expected the batch "
                f"({batch_size}) first and at least one channel axis"
            )
        return tensor


@dataclass
class Concepts:
    """Latent relevance of one layer for a batch of examples (see :func:`explain_concepts`).

    Attributes
    ----------
    layer, channel_axis:
        The module and the axis of its output that holds the channels.
    channel_relevance:
        ``(N, C)``: relevance of each channel, summed over every other axis (positions, tokens).
    channels:
        The channels that were conditioned on (``conditional``'s second axis).
    conditional:
        ``(N, len(channels), *input_shape)`` input relevance through each channel only (keyword
        inputs or ``sources``: a dict of such tensors by input / source name).
    relevance:
        The unconditioned input relevance (the same structure without the channel axis).
    explained:
        ``(N,)`` the explained output values.
    target:
        ``(N,)`` the explained output indices (None when a callable chose them).
    """

    layer: str
    channel_axis: int
    channel_relevance: torch.Tensor
    channels: list[int]
    conditional: torch.Tensor | dict[str, torch.Tensor] | None
    relevance: torch.Tensor | dict[str, torch.Tensor]
    explained: torch.Tensor
    target: torch.Tensor | None

    @property
    def delta(self) -> torch.Tensor:
        """``(N,)`` unconditioned relevance minus the conditional relevances summed over the
        conditioned channels: zero (to rounding) when all channels were conditioned on and every
        path from the inputs to the output runs through the layer."""
        if self.conditional is None:
            raise ValueError("no channels were conditioned on (channels=[])")
        n = self.explained.shape[0]

        def total(value: Any, axis: int | None) -> torch.Tensor:
            parts = value.values() if isinstance(value, dict) else [value]
            return sum((p.sum(axis) if axis is not None else p).reshape(n, -1).sum(1) for p in parts)

        return total(self.relevance, None) - total(self.conditional, 1)


def _check_tracked(data: Inputs, names: list[str]) -> None:
    """Relevance needs a floating-point input or a source: with token ids alone nothing in the
    forward requires grad (parameters do not, inside a scope) and every relevance would be 0."""
    if isinstance(data, dict) and not names and not any(v.is_floating_point() for v in data.values()):
        raise ValueError(
            "the inputs have no floating-point entry and no sources= were given, so no relevance can "
            "be read: for token ids pass sources=torch.nn.Embedding (relevance is read at the "
            "embeddings), or give inputs_embeds"
        )


def _channel_axis(axis: int, ndim: int, name: str) -> int:
    resolved = axis if axis >= 0 else ndim + axis
    if not 1 <= resolved < ndim:
        raise ValueError(
            f"channel_axis={axis} does not fit the {ndim}-D output of layer {name!r} (axis 0 is the batch)"
        )
    return resolved


def _replicate(batch: Inputs, copies: int) -> Inputs:
    def repeat(t: torch.Tensor) -> torch.Tensor:
        return t.repeat(copies, *([1] * (t.dim() - 1)))

    if isinstance(batch, Mapping):
        return {key: repeat(value) for key, value in batch.items()}
    return repeat(batch)


def _split_copies(value: torch.Tensor, copies: int) -> torch.Tensor:
    """``(copies * N, ...)`` -> ``(N, copies, ...)``."""
    return value.reshape(copies, -1, *value.shape[1:]).transpose(0, 1)


def _structure(
    relevance: list[torch.Tensor], read: dict[str, torch.Tensor], features: list[str], mapping: bool
) -> torch.Tensor | dict[str, torch.Tensor]:
    if not mapping and not read:
        return relevance[0]
    named = dict(zip(features, relevance)) if mapping else {"input": relevance[0]}
    named.update(read)
    return named


def _map(value: torch.Tensor | dict[str, torch.Tensor], fn: Any) -> Any:
    return {key: fn(v) for key, v in value.items()} if isinstance(value, dict) else fn(value)


def _input_layer_conditional(
    scope: Any, probe: _Probe, point: torch.Tensor, grad: torch.Tensor, axis: int, channels: list[int]
) -> torch.Tensor | None:
    """Conditional relevance when the layer is an affine layer that reads the (tensor) model input
    itself: everything below the layer is its own rule, and every rule's backward works per
    output channel (its denominators and ``s`` are elementwise in the output), so the rule run on
    the layer restricted to channel ``c`` (weights ``W[c]``, ``z[c]``, ``g[c]``) gives exactly the
    relevance conditioned on ``c``, at ``1/C`` of the layer's backward. None when this does not apply."""
    from lrp_domains.core.rules import _Layer

    call = scope.calls.get(id(probe.module))
    leaves = scope.inputs.leaves
    if call is None or call.ops is None or call.ops.feature_dim is None or len(leaves) != 1 or scope.inputs.sources:
        return None
    x = probe.inputs[0] if probe.inputs else None
    if not isinstance(x, torch.Tensor) or scope.inputs.input_of(x) is None:
        return None
    features = 1 if call.ops.feature_dim == 1 else point.dim() - 1
    rule = call.applied
    if axis != features or not (rule is None or getattr(rule, "affine_backward", None) is not None):
        return None  # a rule without a direct form (Rule.affine_backward)
    weight, bias = call.params()
    x = x.detach()
    z = point.detach()
    found = []
    with torch.no_grad():
        for channel in channels:
            w = weight.narrow(0, channel, 1)
            b = None if bias is None else bias.narrow(0, channel, 1)
            z_c, g_c = z.narrow(axis, channel, 1), grad.narrow(axis, channel, 1)
            if rule is None:  # the plain gradient
                relevance = x * call.ops.vjp(x, w, g_c)
            else:
                result = rule.affine_backward(_Layer(call.ops, x, z_c, w, b, g_c))
                relevance = result.reshape(x.shape) if rule.writes_relevance else x * result
            found.append(relevance)
    return torch.stack(found, 1)


def _retained_conditional(
    scope: Any,
    point: torch.Tensor,
    grad: torch.Tensor,
    axis: int,
    channels: list[int],
    features: list[str],
    mapping: bool,
) -> Any:
    """``(N, K, ...)`` conditional relevance: one backward from the layer per channel, each seeded with
    the layer's gradient masked to that channel, on the graph of the first pass (kept alive)."""
    if not channels:
        return None
    leaves = list(scope.inputs.leaves)
    found: list[Any] = []  # a tensor or a dict of tensors per channel (_structure)
    for number, channel in enumerate(channels):
        seed = torch.zeros_like(grad)
        index: list[slice | int] = [slice(None)] * grad.dim()
        index[axis] = channel
        seed[tuple(index)] = grad[tuple(index)]
        relevance, read, _, _ = read_relevance(scope, leaves, point, seed, retain_graph=number < len(channels) - 1)
        found.append(_structure(relevance, read, features, mapping))
    if isinstance(found[0], dict):
        return {key: torch.stack([f[key] for f in found], 1) for key in found[0]}
    return torch.stack(found, 1)


def _concepts_of_batch(
    model: nn.Module,
    scope: Any,
    probe: _Probe,
    batch: Inputs,
    target: Any,
    channels: list[int] | None,
    channel_axis: int,
    channel_batch: int | None,
    output_fn: OutputFn | None,
    strict: bool,
) -> tuple[torch.Tensor, Any, Any, torch.Tensor, torch.Tensor | None, list[int]]:
    n = _length(batch)
    mapping = isinstance(batch, dict)
    probe.seen, probe.inputs, probe.stop = [], [], False
    raw, leaves, features = run_tracked(model, scope, batch)
    point = probe.tensor(n)
    output = explained_output(scope, raw, batch, output_fn)
    scope.check(strict)
    explained, index = select_target(output, target)
    conditioning = channels is None or bool(channels)
    relevance, read, _, (grad,) = read_relevance(
        scope, leaves, explained.sum(), None, extra=[point], retain_graph=conditioning and channel_batch is None
    )
    axis = _channel_axis(channel_axis, point.dim(), probe.name)
    grad = torch.zeros_like(point) if grad is None else grad.detach()
    at_layer = point.detach() * grad
    others = [d for d in range(1, point.dim()) if d != axis]
    channel_relevance = at_layer.sum(others) if others else at_layer
    unconditioned = _structure(relevance, read, features, mapping)
    count = point.shape[axis]
    channels = list(range(count)) if channels is None else channels
    bad = [c for c in channels if not 0 <= c < count]
    if bad:
        raise ValueError(f"channels {bad[:5]} are outside layer {probe.name!r}'s {count} channels (0..{count - 1})")
    pieces: list[Any] = []
    fast = _input_layer_conditional(scope, probe, point, grad, axis, channels) if channels else None
    if fast is not None:
        pieces.append(fast)
        channels_left: list[int] = []
    else:
        channels_left = channels
    if channel_batch is None:  # one backward per channel from the layer, on the first pass's graph
        retained = _retained_conditional(scope, point, grad, axis, channels_left, features, mapping)
        if retained is not None:
            pieces.append(retained)
        channels_left = []
    for start in range(0, len(channels_left), channel_batch or 1):
        chunk = channels_left[start : start + (channel_batch or 1)]
        copies = len(chunk)
        probe.seen, probe.inputs, probe.stop = [], [], True
        try:
            run_tracked(model, scope, _replicate(batch, copies))
        except _Stop:
            pass
        else:
            raise RuntimeError(f"layer {probe.name!r} did not run in the forward")
        replicated = probe.tensor(n * copies)
        mask = torch.zeros(copies, point.shape[axis], dtype=grad.dtype, device=grad.device)
        mask[torch.arange(copies), torch.tensor(chunk)] = 1
        mask = mask.reshape(copies, *[point.shape[axis] if d == axis else 1 for d in range(1, point.dim())])
        seed = (grad.unsqueeze(0) * mask.unsqueeze(1)).reshape(n * copies, *grad.shape[1:])
        leaves = scope.inputs.leaves
        rel, rd, _, _ = read_relevance(scope, list(leaves), replicated, seed)
        pieces.append(_map(_structure(rel, rd, features, mapping), lambda v, k=copies: _split_copies(v, k)))
    conditional: torch.Tensor | dict[str, torch.Tensor] | None = None
    if pieces:
        if isinstance(pieces[0], dict):
            conditional = {key: torch.cat([p[key] for p in pieces], 1) for key in pieces[0]}
        else:
            conditional = torch.cat(pieces, 1)
    return channel_relevance.detach(), conditional, unconditioned, explained.detach(), index, channels


def explain_concepts(
    model: nn.Module,
    inputs: Inputs,
    layer: str,
    channels: Sequence[int] | None = (),
    target: Target = None,
    composite: str | Composite | None = None,
    *,
    channel_axis: int = 1,
    at: str = "output",
    channel_batch: int | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    output: OutputFn | None = None,
    sources: Sources = None,
    labels: Sequence[str] | None = None,
    strict: bool = False,
) -> Concepts:
    """Channel relevance of ``layer`` and input relevance conditioned on each of ``channels``.

    Parameters
    ----------
    model, inputs, target, composite, batch_size, device, output, labels, strict:
        As for :func:`lrp_domains.explain` (``composite`` None: ``"epsilon"``).
    layer:
        A module name from ``model.named_modules()``; the module must run once per forward.
    channels:
        Channels to condition on (``None``: every channel; ``()``: none, channel relevance only).
    channel_axis:
        The axis of the layer's output that holds channels: 1 for convolutions (``(N, C, L)``) and
        dense layers (``(N, C)``); -1 for transformers' hidden states (``(N, T, H)``).
    at:
        ``"output"`` (the module's output) or ``"input"`` (its first input: e.g. the concatenated
        heads entering an attention output projection).
    channel_batch:
        None (default): one backward from the layer per channel, on the first pass's graph (no
        forward is repeated). A number: channels per pass of the *replay* strategy, which repeats
        the forward up to the layer on the batch replicated once per channel and runs one backward
        for the chunk (larger kernels: for accelerators; on 2 CPU cores it was slower).
    sources:
        As for :func:`lrp_domains.explain`: module outputs where relevance is read (token models'
        embeddings); the conditional relevance is then returned per source.
    """
    if channel_batch is not None and channel_batch < 1:
        raise ValueError(f"channel_batch must be >= 1 (or None), got {channel_batch}")
    composite = resolve_composite(composite if composite is not None else "epsilon")
    data = prepare_inputs(model, inputs, device)
    targets = resolve_targets(target, _length(data), labels)
    names = _source_names(model, sources)
    _check_tracked(data, names)
    parts = []
    scope = _traced_scope(model, composite, data)
    with _Probe(model, layer, at) as probe, eval_mode(model), torch.enable_grad(), scope:
        scope.inputs.read_sources(names)
        chosen: list[int] | None = None if channels is None else [int(c) for c in channels]
        for batch, batch_target in batches(data, targets, batch_size):
            parts.append(
                _concepts_of_batch(
                    model, scope, probe, batch, batch_target, chosen, channel_axis, channel_batch, output, strict
                )
            )
            chosen = parts[-1][5]
    channel_relevance = torch.cat([p[0] for p in parts])

    def cat(values: list) -> Any:
        if values[0] is None:
            return None
        if isinstance(values[0], dict):
            return {key: torch.cat([v[key] for v in values]) for key in values[0]}
        return torch.cat(values)

    targets_out = cat([p[4] for p in parts])
    return Concepts(
        layer,
        channel_axis,
        channel_relevance,
        list(chosen or []),
        cat([p[1] for p in parts]),
        cat([p[2] for p in parts]),
        torch.cat([p[3] for p in parts]),
        targets_out,
    )


def concept_relevance(
    model: nn.Module,
    inputs: Inputs,
    layer: str,
    target: Target = None,
    composite: str | Composite | None = None,
    **options: Any,
) -> torch.Tensor:
    """``(N, C)`` relevance of each channel (neuron, filter, hidden unit) of ``layer``'s output,
    summed over positions: ``R_c = sum_p a_cp g_cp`` (CRP, Achtibat et al. 2023, Eq. 5), from one
    forward and one backward pass. Options as for :func:`explain_concepts`."""
    return explain_concepts(model, inputs, layer, (), target, composite, **options).channel_relevance


def conditional_relevance(
    model: nn.Module,
    inputs: Inputs,
    layer: str,
    channels: Sequence[int] | None,
    target: Target = None,
    composite: str | Composite | None = None,
    **options: Any,
) -> torch.Tensor | dict[str, torch.Tensor] | None:
    """``(N, len(channels), *input_shape)`` input relevance conditioned on each channel of
    ``layer`` (CRP, Achtibat et al. 2023, Eq. 6: relevance seeded at the layer only where the
    channel is); summed over all channels it is the input relevance through the layer
    (:attr:`Concepts.delta` checks it). Channels are batched (``channel_batch``); ``None``: all
    (none, ``[]``: None). Options as for :func:`explain_concepts`."""
    return explain_concepts(model, inputs, layer, channels, target, composite, **options).conditional


def layer_relevance(
    model: nn.Module,
    inputs: Inputs,
    layers: Sequence[str],
    target: Target = None,
    composite: str | Composite | None = None,
    *,
    at: str = "output",
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    output: OutputFn | None = None,
    sources: Sources = None,
    labels: Sequence[str] | None = None,
    strict: bool = False,
) -> dict[str, torch.Tensor]:
    """Relevance at the output (or first input) of each named module, full shape ``(N, ...)``:
    activation x modified gradient, from one forward and one backward pass for all layers (the
    residual stream's relevance per token and layer of a transformer, per neuron of an MLP).
    ``sources``: as for :func:`lrp_domains.explain` (token models: ``torch.nn.Embedding``)."""
    composite = resolve_composite(composite if composite is not None else "epsilon")
    data = prepare_inputs(model, inputs, device)
    targets = resolve_targets(target, _length(data), labels)
    names = _source_names(model, sources)
    _check_tracked(data, names)
    probes = [_Probe(model, name, at) for name in layers]
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    entered = []
    scope = _traced_scope(model, composite, data)
    try:
        for probe in probes:
            entered.append(probe.__enter__())
        with eval_mode(model), torch.enable_grad(), scope:
            scope.inputs.read_sources(names)
            for batch, batch_target in batches(data, targets, batch_size):
                for probe in probes:
                    probe.seen, probe.stop = [], False
                raw, leaves, _ = run_tracked(model, scope, batch)
                points = [probe.tensor(_length(batch)) for probe in probes]
                explained, _ = select_target(explained_output(scope, raw, batch, output), batch_target)
                scope.check(strict)
                _, _, _, grads = read_relevance(scope, leaves, explained.sum(), None, extra=points)
                for name, point, grad in zip(layers, points, grads):
                    value = point.detach() * grad if grad is not None else torch.zeros_like(point)
                    collected[name].append(value.detach())
    finally:
        for probe in entered:
            probe.__exit__()
    return {name: torch.cat(values) for name, values in collected.items()}


def _traced_scope(model: nn.Module, composite: Composite, data: Inputs) -> Scope:
    """The composite's scope (not entered) with the BatchNorms to merge in any model shape, as
    :func:`lrp_domains.explain` finds them (from a forward of the first few examples), so that
    latent and input relevance use the same layers."""
    scope = composite.context(model)
    first, _ = next(batches(data, None, 8))
    with eval_mode(model), torch.enable_grad():
        scope.traced_pairs = trace_for(model, composite, first)
    return scope
