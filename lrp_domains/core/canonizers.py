"""Canonizers: rewrite how modules compute for the duration of an explanation, never their weights.

A canonizer has ``apply(model, scope) -> undo | None``: the scope calls it on entry and the
returned callable on exit (also after an exception), in reverse order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeGuard, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lrp_domains.core import derived
from lrp_domains.core.engine import walk
from lrp_domains.core.layers import parameters_of

if TYPE_CHECKING:
    from lrp_domains.core.engine.scope import Scope

MERGEABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
Mergeable = Union[nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d]


#: Per layer (by id: the model holds its modules for the call), within one call: the tensors (and
#: epsilon) merged, their state, the merged parameters.
_MERGED: dict[int, tuple[tuple, list, tuple[torch.Tensor, torch.Tensor]]] = {}
derived.on_clear(_MERGED.clear)  # kept for one call only

_MISSING = object()


def _held(module: nn.Module, table: dict, name: str) -> torch.Tensor | None:
    """``getattr(module, name)`` for a parameter or buffer, read from its table where it is one
    (a parametrized weight is a property instead: read as such)."""
    value = table.get(name, _MISSING)
    return getattr(module, name, None) if value is _MISSING else value


def _sources(layer: nn.Module, norm: _BatchNorm) -> tuple[torch.Tensor | float | None, ...]:
    """What the merged parameters are made of: the layer's weight and bias, the norm's affine
    parameters, running statistics and epsilon."""
    params, norm_params, buffers = layer._parameters, norm._parameters, norm._buffers
    return (
        _held(layer, params, "weight"),
        _held(layer, params, "bias"),
        _held(norm, norm_params, "weight"),
        _held(norm, norm_params, "bias"),
        _held(norm, buffers, "running_mean"),
        _held(norm, buffers, "running_var"),
        norm.eps,
    )


def _state(sources: tuple) -> list:
    """Each tensor's version counter and storage (the kept entry holds the tensors themselves, so
    none is freed and replaced by another at the same address while it is kept), and epsilon."""
    stamps: list = [None if v is None else (v._version, v.data_ptr()) for v in sources[:6]]
    stamps.append(sources[6])
    return stamps


def _kept(layer: nn.Module, norm: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The merged parameters kept for ``layer`` in this call, if made from these very tensors, unmodified."""
    kept = _MERGED.get(id(layer))
    if kept is None:
        return None
    sources = _sources(layer, norm)
    for held, now in zip(kept[0], sources):
        if held is not now:
            return None
    return kept[2] if kept[1] == _state(sources) else None


def _merge_many(pairs: list[tuple[nn.Module, _BatchNorm]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:meth:`MergeBatchNorm._merge` of each pair, the same values bit for bit, with ``torch._foreach_*``
    operations over the pairs that share a device and dtype and have an affine norm and a layer bias
    (or all lack one); any other pair on its own."""
    return _merge_from(pairs, [_sources(layer, norm) for layer, norm in pairs])


def _merge_from(
    pairs: list[tuple[nn.Module, _BatchNorm]], sources: list[tuple]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`_merge_many` with each pair's :func:`_sources` read already."""
    merged: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(pairs)
    groups: dict[tuple, list[int]] = {}
    for index, (weight, bias, gamma, beta, _, var, _) in enumerate(sources):
        assert weight is not None and var is not None  # merged only with running statistics
        if len(pairs) == 1 or gamma is None or beta is None or var.dtype != weight.dtype or var.device != weight.device:
            merged[index] = MergeBatchNorm._merge(*pairs[index])
        else:
            groups.setdefault((weight.device, weight.dtype, bias is None), []).append(index)
    for (_, _, no_bias), indices in groups.items():
        held = [sources[i] for i in indices]  # (weight, bias, gamma, beta, mean, var, eps) of each pair
        # the operations of _merge, in its order, each over the whole group
        scale = list(torch._foreach_add([_running(h[5]) for h in held], [h[6] for h in held]))
        torch._foreach_rsqrt_(scale)
        torch._foreach_mul_(scale, [_running(h[2]) for h in held])
        shift = list(torch._foreach_mul([_running(h[4]) for h in held], scale))
        torch._foreach_neg_(shift)
        torch._foreach_add_(shift, [_running(h[3]) for h in held])
        biases = shift
        if not no_bias:
            biases = list(torch._foreach_mul([_running(h[1]) for h in held], scale))
            torch._foreach_add_(biases, shift)
        weights = [_running(h[0]) for h in held]
        scales = [s.reshape((-1,) + (1,) * (w.dim() - 1)) for s, w in zip(scale, weights)]
        for i, weight, bias in zip(indices, torch._foreach_mul(weights, scales), biases):
            merged[i] = (weight, bias)
    return [pair for pair in merged if pair is not None]


def _running(tensor: torch.Tensor | None) -> torch.Tensor:
    """``tensor`` out of autograd's sight: itself where nothing records it (buffers; parameters
    inside a scope, which turns their ``requires_grad`` off), else detached."""
    assert tensor is not None  # _merge_many groups pairs whose norm has every tensor
    return tensor.detach() if tensor.requires_grad else tensor


def _children(module: nn.Module) -> list[nn.Module]:
    """``list(module.children())``: each child once, in order (without its generators)."""
    children: list[nn.Module] = []
    seen: set[nn.Module] = set()  # by identity, as nn.Module's own walk keeps them
    for child in module._modules.values():
        if child is not None and child not in seen:
            seen.add(child)
            children.append(child)
    return children


def _features(layer: Mergeable) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


class MergeBatchNorm:
    """Merge each BatchNorm into the Linear/Conv layer right before it (Montavon et al. 2019, Sec. 10.3).

    LRP rules are defined for affine layers; ``BN(conv(x))`` is one affine layer with weights
    ``W' = W * gamma / sqrt(var + eps)`` and bias ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``.
    Inside a scope the layer computes with the merged parameters and the BatchNorm passes its
    input through; the parameters themselves are never modified, so nothing needs undoing.

    Pairs are found as consecutive children of an ``nn.Sequential`` (as zennit's
    ``SequentialMergeBatchNorm``); with ``traced`` (the default) also in any model shape, from the
    autograd graph of one forward, where every call of the BatchNorm takes the output of one layer
    and nothing else takes it (:mod:`lrp_domains.core.traced_pairs`: a residual block, a Sequential
    held in a module); plus any given explicitly by module name in ``pairs``. A BatchNorm in
    training mode (batch statistics) is not merged.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]] = (), sequential: bool = True, traced: bool = True) -> None:
        self.pairs = tuple(pairs)
        self.sequential = sequential
        self.traced = traced

    def __repr__(self) -> str:
        return f"MergeBatchNorm(pairs={self.pairs!r}, sequential={self.sequential}, traced={self.traced})"

    def apply(self, model: nn.Module, scope: Scope) -> None:
        """Register every pair with ``scope``; nothing to undo (parameters are not touched)."""
        modules = [module for _, module in scope.named_modules()]
        for layer, norm in self.find(model, scope.traced_pairs, modules):
            scope.merge(layer, norm)

    def find(
        self,
        model: nn.Module,
        traced: Sequence[tuple[nn.Module, _BatchNorm]] = (),
        modules: Sequence[nn.Module] | None = None,
    ) -> list[tuple[nn.Module, _BatchNorm]]:
        """The (layer, batchnorm) pairs of ``model`` that this canonizer merges (``traced``: those
        :func:`~lrp_domains.core.traced_pairs.trace_pairs` found, merged when ``self.traced``;
        ``modules``: the model's modules, when the caller has walked them already)."""
        found: list[tuple[nn.Module, _BatchNorm]] = []
        if self.sequential:
            for module in walk.modules(model) if modules is None else modules:
                if not isinstance(module, nn.Sequential):
                    continue
                children = _children(module)
                for layer, norm in zip(children, children[1:]):
                    if isinstance(layer, MERGEABLE) and self._mergeable_norm(norm, layer):
                        found.append((layer, norm))
        if self.traced:
            known = {id(norm) for _, norm in found}
            found.extend(pair for pair in traced if id(pair[1]) not in known)
        for layer_name, norm_name in self.pairs:
            layer, norm = model.get_submodule(layer_name), model.get_submodule(norm_name)
            if not isinstance(layer, MERGEABLE) or not self._mergeable_norm(norm, layer):
                raise ValueError(
                    f"cannot merge '{norm_name}' ({type(norm).__name__}) into '{layer_name}' "
                    f"({type(layer).__name__}): need a Linear/Conv followed by a BatchNorm with "
                    "running statistics and as many features as the layer has outputs"
                )
            found.append((layer, norm))
        return found

    @staticmethod
    def _mergeable_norm(norm: nn.Module, layer: Mergeable) -> TypeGuard[_BatchNorm]:
        return isinstance(norm, _BatchNorm) and norm.running_var is not None and norm.num_features == _features(layer)

    @staticmethod
    def merged_parameters(
        layer: nn.Module, norm: _BatchNorm, group: Sequence[tuple[nn.Module, _BatchNorm]] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of ``norm(layer(x))`` as one affine layer (running statistics).

        Within one call of the engine (all its batches: :func:`lrp_domains.core.derived.kept`),
        kept per layer while every tensor they come from is the same tensor, unmodified (its
        storage and version counter). Never between calls: an edit through ``.data``, which moves
        no version counter, would go unseen. ``group``: the other pairs merged in the same model
        (a scope's); those not kept are merged together with this one, a few operations on lists
        of tensors for all of them instead of a few per pair (one example at a time, merging pair
        by pair was a tenth of a residual CNN's call)."""
        if not derived.active():
            return MergeBatchNorm._merge(layer, norm)
        kept = _kept(layer, norm)
        if kept is not None:
            return kept
        pairs = [(layer, norm)] + [
            (other, n) for other, n in group if other is not layer and not n.training and _kept(other, n) is None
        ]
        read = [_sources(merged_layer, merged_norm) for merged_layer, merged_norm in pairs]
        for (merged_layer, _), sources, merged in zip(pairs, read, _merge_from(pairs, read)):
            _MERGED[id(merged_layer)] = (sources, _state(sources), merged)
        return _MERGED[id(layer)][2]

    @staticmethod
    def _merge(layer: nn.Module, norm: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
        weight, layer_bias = parameters_of(layer)
        weight = weight.detach()
        running_var, running_mean = norm.running_var, norm.running_mean
        assert running_var is not None and running_mean is not None  # merged only with running statistics
        # in place on the tensors made here: the values of rsqrt(var + eps) * gamma, -mean * scale + beta
        # and b * scale + shift, with fewer operations (one example at a time, each is a few microseconds)
        scale = running_var.detach().add(norm.eps).rsqrt_()
        if norm.weight is not None:
            scale.mul_(norm.weight.detach())
        shift = running_mean.detach().mul(scale).neg_()
        if norm.bias is not None:
            shift.add_(norm.bias.detach())
        bias = shift if layer_bias is None else layer_bias.detach().mul(scale).add_(shift)
        if scale.dtype != weight.dtype:
            scale, bias = scale.to(weight.dtype), bias.to(weight.dtype)
        return weight * scale.reshape((-1,) + (1,) * (weight.dim() - 1)), bias
