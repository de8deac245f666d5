"""Linear/Conv -> BatchNorm pairs in any model shape, read off the autograd graph of one forward.

:class:`~lrp_domains.core.canonizers.MergeBatchNorm` merges a BatchNorm into the layer before it
(Montavon et al. 2019, Sec. 10.3). Consecutive children of an ``nn.Sequential`` are such pairs by
construction; in a model whose ``forward`` calls its modules in its own way (a residual block,
``self.net`` inside a module) the pairs are found here, from what one forward does:

- every call of the BatchNorm takes, as its input, the output of a call of one and the same layer;
- every call of that layer feeds that BatchNorm and nothing else: in the autograd graph of the
  forward, the layer's output node has exactly one consumer, the BatchNorm's node.

Only then is ``norm(layer(x))`` computed as one affine layer without changing any value the
model computes. The forward runs once per model, with the first batch, and the pairs are kept
for the model (weakly: they go with it). A model whose submodules are replaced is traced again.
The caller that traced hands the pairs to its scope (``scope.traced_pairs``), so a scope merges
only what was traced for it, whatever ran before on the same model.
"""

from __future__ import annotations

import weakref
from collections import Counter, defaultdict
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lrp_domains.core.engine import walk

__all__ = ["trace_for", "trace_pairs"]

_MERGEABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: Per model: (the ids of its modules when traced, the pairs found).
_FOUND: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], list[tuple[nn.Module, _BatchNorm]]]] = (
    weakref.WeakKeyDictionary()
)


def trace_pairs(
    model: nn.Module, inputs: Any, modules: list[nn.Module] | None = None
) -> list[tuple[nn.Module, _BatchNorm]]:
    """The mergeable pairs of ``model``, from one forward of ``inputs`` (a tensor, or a dict of
    them) the first time and kept for the model after that (traced again when its modules
    change); a model with no BatchNorm outside ``nn.Sequential`` pairs, or inputs that are not
    tensors, is not run. ``modules``: ``list(model.modules())``, when the caller has walked it."""
    ids = tuple(id(m) for m in (walk.modules(model) if modules is None else modules))
    found = _FOUND.get(model)
    if found is not None and found[0] == ids:
        return found[1]
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.running_var is not None]
    pairs: list[tuple[nn.Module, _BatchNorm]] = []
    if norms and not _all_in_sequential_pairs(model, norms):
        try:
            pairs = _trace(model, inputs, norms)
        except Exception:  # noqa: BLE001 - the explanation's own forward reports what is wrong
            pairs = []
    _FOUND[model] = (ids, pairs)
    return pairs


def trace_for(
    model: nn.Module, composite: Any, inputs: Any, modules: list[nn.Module] | None = None
) -> list[tuple[nn.Module, _BatchNorm]]:
    """:func:`trace_pairs` when one of the composite's canonizers merges traced pairs, else none
    (call it in eval mode; hand the pairs to the scope as ``scope.traced_pairs`` before entering it)."""
    if any(getattr(canonizer, "traced", False) for canonizer in composite.canonizers):
        return trace_pairs(model, inputs, modules)
    return []


def _all_in_sequential_pairs(model: nn.Module, norms: list[_BatchNorm]) -> bool:
    paired: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module.children())
            paired.update(id(b) for a, b in zip(children, children[1:]) if isinstance(a, _MERGEABLE))
    return all(id(norm) in paired for norm in norms)


def _trace(model: nn.Module, inputs: Any, norms: list[_BatchNorm]) -> list[tuple[nn.Module, _BatchNorm]]:
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.detach().requires_grad_(inputs.is_floating_point())
        call = lambda: model(inputs)  # noqa: E731
    elif isinstance(inputs, dict):
        call = lambda: model(**inputs)  # noqa: E731
    else:
        return []
    made_by: dict[Any, nn.Module] = {}  # a layer output's graph node -> the layer
    layer_calls: Counter[int] = Counter()
    fed: dict[int, list[Any]] = defaultdict(list)  # per norm, the graph nodes of its inputs
    handles = []

    def after_layer(module: nn.Module, args: tuple, out: Any) -> None:
        layer_calls[id(module)] += 1
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            made_by[out.grad_fn] = module

    def before_norm(module: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        fed[id(module)].append(x.grad_fn if isinstance(x, torch.Tensor) else None)

    try:
        for module in model.modules():
            if isinstance(module, _MERGEABLE):
                handles.append(module.register_forward_hook(after_layer))
        for norm in norms:
            handles.append(norm.register_forward_pre_hook(before_norm))
        with torch.enable_grad():
            output = call()
    finally:
        for handle in handles:
            handle.remove()
    consumers = _consumers(output)
    pairs = []
    for norm in norms:
        nodes = fed.get(id(norm), [])
        layers = {id(made_by.get(node)) for node in nodes}
        if not nodes or None in nodes or len(layers) != 1:
            continue
        layer = made_by.get(nodes[0])
        if layer is None or layer_calls[id(layer)] != len(nodes):
            continue  # the layer is also called for something else
        if any(consumers.get(node, 0) != 1 for node in nodes):
            continue  # its output also goes elsewhere (a residual taken before the norm)
        features = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        if norm.num_features == features:
            pairs.append((layer, norm))
    return pairs


def _consumers(output: Any) -> dict[Any, int]:
    """Per node of the autograd graph behind ``output``, how many edges lead into it."""
    roots = [t.grad_fn for t in _tensors(output) if t.grad_fn is not None]
    counts: dict[Any, int] = defaultdict(int)
    seen = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is not None:
                counts[child] += 1
                stack.append(child)
    return counts


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    values = getattr(value, "values", None)  # transformers' ModelOutput
    return [t for v in values() for t in _tensors(v)] if callable(values) else []
