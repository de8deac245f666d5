"""``explain``: LRP relevance of a model's inputs in one forward and one backward pass.

:func:`explain` is the one batching loop every explainer builds on. Domain explainers give it
what they need through its hooks: keyword inputs (a mapping of tensors, ``model(**batch)``),
``output`` (which tensor of the model's output is explained), ``sources`` (module outputs where
relevance is read, e.g. embeddings), per-example targets with ``labels``, and
:func:`explain_batches` for batches they build themselves (texts padded per batch).
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

import torch
from torch import nn

from lrp_domains.core import composites, derived
from lrp_domains.core.composite import Composite
from lrp_domains.core.engine import walk
from lrp_domains.core.engine.graph_plan import frozen, graph_plan_for
from lrp_domains.core.engine.ledger import Ledger
from lrp_domains.core.engine.result import Explanation
from lrp_domains.core.engine.sequential import held_plan_for, plan_for
from lrp_domains.core.engine.targets import Target, resolve_targets, select_target
from lrp_domains.core.traced_pairs import trace_for

__all__ = [
    "Target",
    "batches",
    "eval_mode",
    "explain",
    "explain_batches",
    "model_device",
    "model_dtype",
    "prepare_inputs",
    "resolve_composite",
    "select_target",
]

Inputs = Union[torch.Tensor, Mapping[str, torch.Tensor]]
_MISSING = object()
#: ``output(raw_model_output, batch_inputs) -> (N, ...)`` tensor that targets index.
OutputFn = Callable[[Any, Any], torch.Tensor]
Sources = Union[Sequence[str], Sequence[type], type, None]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    return walk.device_and_dtype(model)[0]


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter, if any."""
    return walk.device_and_dtype(model)[1]


def eval_mode(model: nn.Module, modules: list[nn.Module] | None = None) -> contextlib.AbstractContextManager[None]:
    """Put every module in eval mode for the block; give each its own mode back afterwards.

    A module with gradient checkpointing switched on (transformers' ``gradient_checkpointing``
    attribute) keeps ``training=True`` on itself alone: transformers recomputes a layer only in
    training mode, and its dropout and attention submodules stay in eval mode, so the outputs are
    eval outputs and activation memory is still saved. A layer that applies dropout in its own
    forward stays in eval mode (not checkpointed) so that nothing is dropped."""
    if modules is None:
        modules = walk.modules(model)
    if not any(module.training or _checkpointing(module) for module in modules):
        return _NOTHING  # already in eval mode, nothing checkpointed: nothing to set or give back (the common case)
    return _switched(model, modules)


_NOTHING = contextlib.nullcontext()


@contextlib.contextmanager
def _switched(model: nn.Module, modules: list[nn.Module]) -> Iterator[None]:
    training = {module: module.training for module in modules}
    try:
        model.eval()
        for module in modules:
            if _checkpointing(module) and not _drops_out_itself(module):
                module.training = True
        yield
    finally:
        for module, mode in training.items():
            module.training = mode


def _checkpointing(module: nn.Module) -> bool:
    """transformers' ``gradient_checkpointing`` switched on (an attribute of the instance or its
    class; read without ``nn.Module.__getattr__``, which raises for a missing name)."""
    value = module.__dict__.get("gradient_checkpointing", _MISSING)
    if value is _MISSING:
        value = getattr(type(module), "gradient_checkpointing", False)
    return value is True


def _drops_out_itself(module: nn.Module) -> bool:
    """True for a layer that applies dropout in its own forward (a float ``*dropout*`` attribute
    above 0, as BART's layers have): in training mode it would drop, so it stays in eval mode and
    is not checkpointed."""
    return any("dropout" in name and isinstance(value, float) and value > 0 for name, value in vars(module).items())


def resolve_composite(composite: str | Composite, **kwargs: object) -> Composite:
    """A :class:`Composite` from a name (see :func:`lrp_domains.composites.names`) or itself."""
    if isinstance(composite, Composite):
        if kwargs:
            raise TypeError("keyword arguments are for named composites; configure a Composite directly")
        return composite
    if isinstance(composite, str):
        return composites.get(composite, **kwargs)
    raise TypeError(f"composite must be a name or a Composite, got {type(composite).__name__}")


def _as_tensor(value: object, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be a tensor or array-like, got {type(value).__name__}") from error


def _check_device(home: torch.device, device: torch.device | str | None) -> None:
    """Raise unless ``device`` (if given) is where the model is (``home``)."""
    if device is not None:
        wanted = torch.device(device)
        same_index = wanted.index is None or home.index is None or wanted.index == home.index
        if wanted.type != home.type or not same_index:
            raise ValueError(
                f"the model is on {home} but device={wanted}; move it first with model.to('{wanted}') "
                "(explain never moves a model: it is returned unchanged)"
            )


def prepare_inputs(model: nn.Module, inputs: object, device: torch.device | str | None) -> Inputs:
    """Inputs on the model's device: floating-point (and one-hot integer/boolean) tensors in the
    model's dtype; in a mapping, integer entries (token ids, masks) are left as they are."""
    home, dtype = walk.device_and_dtype(model)
    _check_device(home, device)
    if isinstance(inputs, Mapping):
        if not inputs:
            raise ValueError("inputs is an empty mapping; give the model's keyword inputs")
        prepared = {}
        for key, value in inputs.items():
            tensor = _as_tensor(value, f"inputs[{key!r}]")
            if tensor.is_floating_point() and dtype is not None:
                tensor = tensor.to(dtype)
            prepared[key] = tensor.to(home)
        sizes = {key: t.shape[0] if t.dim() else None for key, t in prepared.items()}
        if None in sizes.values() or len(set(sizes.values())) > 1:
            raise ValueError(f"every input needs the same batch dimension first; got {sizes}")
        return prepared
    tensor = _as_tensor(inputs, "inputs")
    if tensor.dim() == 0:
        raise ValueError("inputs must have a batch dimension first, got a scalar")
    if dtype is not None and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    elif not tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    return tensor if tensor.device == home else tensor.to(home)


def _length(inputs: Inputs) -> int:
    return next(iter(inputs.values())).shape[0] if isinstance(inputs, Mapping) else inputs.shape[0]


def _slice(inputs: Inputs, start: int, stop: int) -> Inputs:
    if isinstance(inputs, Mapping):
        return {key: value[start:stop] for key, value in inputs.items()}
    return inputs[start:stop]


def batches(
    data: Inputs, targets: torch.Tensor | Callable | None, batch_size: int | None
) -> Iterator[tuple[Inputs, torch.Tensor | Callable | None]]:
    """``(inputs, targets)`` per batch of ``batch_size`` examples (all at once when None)."""
    n = _length(data)
    size = n if batch_size is None else int(batch_size)
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if size >= n:  # one batch: the data as it is (a slice of all of it would be a view of the same)
        yield data, targets
        return
    for start in range(0, n, size):
        part = targets[start : start + size] if isinstance(targets, torch.Tensor) else targets
        yield _slice(data, start, start + size), part


def explain(
    model: nn.Module,
    inputs: Inputs,
    target: Target = None,
    composite: str | Composite = "epsilon",
    *,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    strict: bool = False,
    progress: bool = False,
    hypothetical: bool = False,
    output: OutputFn | None = None,
    sources: Sources = None,
    labels: Sequence[str] | None = None,
    check_delta: bool = True,
    ledger: bool = False,
    check: str | None = None,
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
        ``(N, ...)``; integer/boolean inputs (one-hot) are cast to the model's dtype. Or a mapping
        of keyword inputs (``model(**inputs)``), each ``(N, ...)``: relevance is computed for its
        floating-point entries; integer entries (token ids, masks) are passed as they are.
    target:
        None (the predicted class: argmax of the output), an index or a label name (``labels``),
        one per example, or a callable ``output -> (N,)`` (e.g. contrastive
        ``lambda out: out[:, 1] - out[:, 0]``).
    composite:
        A name from :func:`lrp_domains.composites.names` or a :class:`Composite`.
    batch_size:
        Examples per forward/backward pass (default: all at once). Results do not depend on it.
    device:
        Where to compute; the model must already be there (default: the model's device).
    strict:
        Raise :class:`~lrp_domains.core.engine.coverage.LRPCoverageError` naming each operation without a
        rule, instead of warning.
    progress:
        Show a progress bar over batches.
    hypothetical:
        Also return :attr:`Explanation.hypothetical`: what each input entry would receive at
        value 1 (one-hot inputs: every base at every position). Tensor inputs only.
    output:
        ``output(raw, batch) -> (N, ...)``: the tensor of the model's output that targets index
        (default: the output itself, its ``.logits``, or its first element). When that tensor is
        the result of a softmax in the model's forward (``torch.softmax``, ``nn.Softmax``...), the
        softmax's input, the logits, is explained instead, with a warning: relevance of a
        probability is zero with the softmax held constant. A softmax ``output`` applies itself
        after the forward is explained as written.
    sources:
        Module names (or module types) whose outputs are where relevance is read: relevance
        stops there and is returned per module in :attr:`Explanation.sources` (an embedding's
        output for token models; a hidden layer).
    labels:
        Names of the output's entries, for targets given by name.
    check_delta:
        Warn when an example lost or gained more than half its relevance under a composite that
        should conserve it (explainers that report ``delta`` themselves turn this off).
    ledger:
        Also record where ``delta`` went, in the same backward pass: :attr:`Explanation.ledger`,
        the relevance each module absorbed (:mod:`lrp_domains.core.engine.ledger`).
    check:
        ``"ledger"`` (implies ``ledger=True``): raise :class:`LedgerError`, naming the module,
        when relevance is lost where no module accounts for it beyond float tolerance (an
        overflow, a stabilizer too small, an operation the ledger cannot see).
    """
    if check not in (None, "ledger"):
        raise ValueError(f"check must be None or 'ledger', got {check!r}")
    ledger = ledger or check == "ledger"
    composite = resolve_composite(composite)
    data = prepare_inputs(model, inputs, device)
    targets = resolve_targets(target, _length(data), labels)
    parts = explain_batches(
        model,
        batches(data, targets, batch_size),
        composite,
        strict=strict,
        progress=progress,
        hypothetical=hypothetical,
        output=output,
        sources=sources,
        check_delta=False,
        total=-(-_length(data) // (batch_size or max(_length(data), 1))),
        ledger=ledger,
    )
    result = Explanation.concatenate(parts)
    if check == "ledger":
        check_ledger(result)
    home = inputs.device if isinstance(inputs, torch.Tensor) else None
    if home is not None and result.explained.device != home:
        result = result.to(home)
    if check_delta and composite.conserves:
        warn_on_large_delta(result)
    return result


def explain_batches(
    model: nn.Module,
    data: Iterable[tuple[Inputs, torch.Tensor | Callable | None]],
    composite: str | Composite = "epsilon",
    *,
    strict: bool = False,
    progress: bool = False,
    hypothetical: bool = False,
    output: OutputFn | None = None,
    sources: Sources = None,
    check_delta: bool = True,
    total: int | None = None,
    ledger: bool = False,
) -> list[Explanation]:
    """One :class:`Explanation` per ``(inputs, targets)`` batch, all inside one scope: the loop
    :func:`explain` runs, for callers that build their own batches (inputs already prepared with
    :func:`prepare_inputs`, targets resolved with :func:`~lrp_domains.core.engine.targets.resolve_targets`)."""
    composite = resolve_composite(composite)
    names = _source_names(model, sources)
    if progress:
        from tqdm.auto import tqdm

        data = tqdm(data, desc="explain", unit="batch", total=total)
    parts: list[Explanation] = []
    data = iter(data)
    first = next(data, None)
    if first is None:
        return parts
    with derived.kept():  # tensors made from parameters alone: once per call, not per batch
        return _explain_all(model, first, data, composite, names, strict, hypothetical, output, check_delta, ledger)


def _explain_all(
    model: nn.Module,
    first: tuple[Inputs, torch.Tensor | Callable | None],
    data: Iterator[tuple[Inputs, torch.Tensor | Callable | None]],
    composite: Composite,
    names: list[str],
    strict: bool,
    hypothetical: bool,
    output: OutputFn | None,
    check_delta: bool,
    ledger: bool,
) -> list[Explanation]:
    parts: list[Explanation] = []
    direct = not names and output is None and isinstance(first[0], torch.Tensor)
    plan = plan_for(model, composite) if direct else None
    # strict mode names uncovered operations anywhere on the input, which only the scope sees
    held = held_plan_for(model, composite) if direct and plan is None and not strict else None
    rest: Iterator[tuple[Inputs, torch.Tensor | Callable | None]] = itertools.chain([first], data)
    if plan is not None:  # an MLP: the same rules, evaluated layer by layer without the scope's machinery
        for batch, batch_target in rest:
            assert isinstance(batch, torch.Tensor)  # a plan is made for tensor inputs only (as the first batch)
            parts.append(plan.explain_batch(batch, batch_target, hypothetical, ledger))
        return _checked(parts, composite, check_delta)
    if held is not None:  # a module applying an MLP to its input, checked per call; else the scope from here on
        with eval_mode(model):
            for batch, batch_target in rest:
                assert isinstance(batch, torch.Tensor)
                part = held.explain_batch(model, batch, batch_target, hypothetical, ledger)
                if part is None:
                    rest = itertools.chain([(batch, batch_target)], rest)
                    break
                parts.append(part)
    traceable = not names and isinstance(first[0], torch.Tensor) and not strict and not ledger
    if traceable and plan is None and (held is None or held.refused):
        # a model fx traces, of modules the core's rules compute on their own: its traced graph
        # (kept per model while its modules and flags are the same), else the scope
        modules = walk.modules(model)
        with eval_mode(model, modules), torch.enable_grad():
            graph = graph_plan_for(model, composite, first[0], modules)  # type: ignore[arg-type]
            if graph is not None:
                with frozen(modules):
                    for batch, batch_target in rest:
                        assert isinstance(batch, torch.Tensor)  # as the first batch
                        parts.append(graph.explain_batch(batch, batch_target, hypothetical, output))
                return _checked(parts, composite, check_delta)
    pending = next(rest, None)
    if pending is not None:
        scope = composite.context(model)
        named = scope.named_modules()  # one walk of the model for the call: its modes, the pairs, the scope
        modules = [module for _, module in named]
        with eval_mode(model, modules), torch.enable_grad():
            # BatchNorms to merge in any model shape
            scope.traced_pairs = trace_for(model, composite, pending[0], modules)
            with scope:
                scope.inputs.capture_hypothetical = hypothetical
                scope.inputs.read_sources(names)
                for batch, batch_target in itertools.chain([pending], rest):
                    parts.append(_explain_batch(model, scope, batch, batch_target, strict, output, ledger))
    return _checked(parts, composite, check_delta)


def _checked(parts: list[Explanation], composite: Composite, check_delta: bool) -> list[Explanation]:
    if check_delta and composite.conserves:
        for part in parts:
            warn_on_large_delta(part)
    return parts


def _source_names(model: nn.Module, sources: Sources) -> list[str]:
    if sources is None:
        return []
    if isinstance(sources, type):
        sources = (sources,)
    modules = dict(model.named_modules())
    names: list[str] = []
    for item in sources:
        if isinstance(item, type):
            names.extend(name for name, module in modules.items() if isinstance(module, item))
        elif item in modules:
            names.append(item)
        else:
            raise ValueError(f"sources: the model has no module {item!r}; give names from model.named_modules()")
    if not names:
        raise ValueError(f"sources: no module of the model matches {list(sources)}")
    return names


def default_output(raw: Any, batch: Any = None) -> torch.Tensor:
    """The explained tensor of a model's output: itself, its ``.logits``, or its first element."""
    if isinstance(raw, torch.Tensor):
        return raw
    logits = getattr(raw, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(raw, (tuple, list)) and raw and isinstance(raw[0], torch.Tensor):
        return raw[0]
    raise TypeError(
        f"explain needs a model that returns a tensor (or an output with .logits), got {type(raw).__name__}; pass "
        "output=lambda raw, batch: ... to say which tensor is explained"
    )


def explained_output(scope: Any, raw: Any, batch: Any, output_fn: OutputFn | None) -> torch.Tensor:
    """The tensor ``output_fn`` (default: :func:`default_output`) picks from the latest forward's
    ``raw`` output, or, when that tensor is the output of a softmax in the forward, the softmax's
    input (the logits; see :meth:`~lrp_domains.core.engine.scope.Scope.output_logits`)."""
    output = (output_fn or default_output)(raw, batch)
    logits = scope.output_logits(output)
    return output if logits is None else logits


def run_tracked(model: nn.Module, scope: Any, batch: Inputs) -> tuple[Any, list[torch.Tensor], list[str]]:
    """One forward of ``batch`` with its floating-point inputs tracked: ``(raw output, leaves,
    names of the tracked mapping entries)`` (no names for a tensor input)."""
    if isinstance(batch, Mapping):
        features = [k for k, v in batch.items() if v.is_floating_point()]
        tracked = scope.track(*[batch[k] for k in features], batch_size=_length(batch))
        return model(**{**batch, **dict(zip(features, tracked))}), list(tracked), features
    tracked = scope.track(batch)
    return model(tracked[0]), list(tracked), []


def read_relevance(
    scope: Any,
    leaves: list[torch.Tensor],
    outputs: torch.Tensor,
    grad_outputs: torch.Tensor | None,
    extra: Sequence[torch.Tensor] = (),
    retain_graph: bool = False,
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor], list[torch.Tensor | None], list[torch.Tensor | None]]:
    """Backward from ``outputs`` (seeded with ``grad_outputs``; None: ones) through the scope's rules:
    ``(relevance per leaf, relevance per source module, modified gradient per leaf, modified gradient
    per ``extra`` tensor)``. A leaf's relevance is ``leaf x gradient`` plus what input-layer rules
    wrote to its anchor. ``retain_graph``: keep the graph for further backward passes."""
    anchors = [scope.inputs.anchor(leaf) for leaf in leaves]
    source_leaves = [(name, leaf) for name, found in scope.inputs.sources.items() for leaf in found]
    wrt = leaves + [a for a in anchors if a is not None] + [leaf for _, leaf in source_leaves] + list(extra)
    if outputs.requires_grad and wrt:
        # A scalar output is seeded by autograd itself: a seed given as a tensor makes autograd check
        # its shape with torch's symbolic-shape module, whose first import (sympy) is most of a
        # second of a cold start where nothing else needs it.
        seed = grad_outputs if grad_outputs is not None or outputs.numel() == 1 else torch.ones_like(outputs)
        try:
            grads: list[torch.Tensor | None] = list(
                torch.autograd.grad(outputs, wrt, seed, allow_unused=True, retain_graph=retain_graph)
            )
        except RuntimeError as error:
            if "modified by an inplace operation" in str(error) and "_LayerRuleFunction" in str(error):
                raise RuntimeError(
                    "the model's forward changed a layer's output in place (out += x, out.add_(x), "
                    "F.relu(out, inplace=True)) after the layer's rule kept it for the backward; write "
                    "that step out of place (out = out + x), or explain with epsilon, whose rule keeps "
                    "nothing (an nn.ReLU(inplace=True) module is handled: it computes on a copy)"
                ) from error
            raise
    else:  # every path was stopped (or the output ignores the input): no relevance arrives
        grads = [None] * len(wrt)
    input_grads, rest = grads[: len(leaves)], grads[len(leaves) :]
    extra_grads = rest[len(rest) - len(extra) :] if extra else []
    rest = rest[: len(rest) - len(extra)]
    relevance = []
    for leaf, grad, anchor in zip(leaves, input_grads, anchors):
        value = leaf.detach() * grad if grad is not None else torch.zeros_like(leaf)
        if anchor is not None:
            written = rest.pop(0)
            if written is not None:
                value = value + written
        relevance.append(value.detach())
    read: dict[str, torch.Tensor] = {}
    for (name, leaf), grad in zip(source_leaves, rest):
        value = (leaf.detach() * grad if grad is not None else torch.zeros_like(leaf)).detach()
        read[name] = read[name] + value if name in read else value
    return relevance, read, input_grads, extra_grads


def _explain_batch(model, scope, batch, target, strict, output_fn, ledger: bool = False) -> Explanation:
    scope.ledger = Ledger(_length(batch)) if ledger else None
    try:
        return _explain_one(model, scope, batch, target, strict, output_fn)
    finally:
        scope.ledger = None


def _explain_one(model, scope, batch, target, strict, output_fn) -> Explanation:
    raw, leaves, features = run_tracked(model, scope, batch)
    output = explained_output(scope, raw, batch, output_fn)
    scope.check(strict)
    explained, index = select_target(output, target)
    relevance, read, input_grads, _ = read_relevance(scope, leaves, explained.sum(), None)
    units = None
    mapping = isinstance(batch, Mapping)
    if scope.inputs.capture_hypothetical and not mapping:
        units = scope.inputs.hypothetical(leaves[0], input_grads[0]).detach()
    relevance_out = dict(zip(features, relevance)) if mapping else relevance[0]
    result = Explanation.build(relevance_out, output.detach(), index, explained.detach(), units, read)
    if scope.ledger is not None:
        result.ledger_rows = scope.ledger.rows(result.delta)
    return result


class LedgerError(ValueError):
    """Relevance was lost where no module accounts for it (``explain(..., check="ledger")``)."""


#: Relative size of the ``(numerical)`` row that ``check="ledger"`` accepts, by dtype.
LEDGER_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def check_ledger(result: Explanation) -> None:
    """Raise :class:`LedgerError` when an example's ``(numerical)`` ledger row is beyond float
    tolerance, naming the first module whose absorbed relevance is not finite (an overflow)
    or else the module that absorbed the most (where to look)."""
    rows = result.ledger_rows
    if rows is None:
        raise ValueError("this explanation has no ledger: explain with ledger=True")
    tolerance = LEDGER_TOLERANCE.get(result.explained.dtype, 1e-4)
    scale = result.explained.detach().double().cpu().abs() + rows.absorbed.abs().sum(0) + 1e-30
    bad = ~(rows.numerical.abs() <= tolerance * scale)  # NaN counts as bad
    if not bool(bad.any()):
        return
    example = int(bad.nonzero()[0, 0])
    column = rows.absorbed[:, example]
    explained = float(result.explained[example])
    advice = (
        "the explanation cannot be trusted: check the model's dtype (float16 overflows: use float32 or "
        "bfloat16), the rules' stabilizers, and strict=True for operations without a rule"
    )
    broken = [i for i in range(len(rows.modules)) if not bool(torch.isfinite(column[i]))]
    if broken:
        first = broken[0]  # rows are in backward order: the first non-finite row is where it broke
        raise LedgerError(
            f"example {example}: the relevance stopped being finite at {rows.modules[first]!r} "
            f"({rows.rules[first]}), explaining {explained:.4g} ({result.explained.dtype}); {advice}"
        )
    if len(rows.modules):
        top = int(column.abs().argmax())
        where = f"the largest absorption is at {rows.modules[top]!r} ({rows.rules[top]})"
    else:
        where = "no module was tapped"
    raise LedgerError(
        f"example {example}: {float(rows.numerical[example]):.4g} of the explained {explained:.4g} was "
        f"lost outside any module's rule ({where}); {advice}"
    )


#: ``|delta|`` above this share of ``|explained| + |sum of relevance|`` is reported.
DELTA_WARNING = 0.5


def warn_on_large_delta(result: Explanation) -> None:
    """Warn when an example lost or gained more than :data:`DELTA_WARNING` of its relevance."""
    explained, delta = result.explained, result.delta
    if explained.numel() <= 64 and explained.device.type == "cpu":  # a few examples: no tensor operations
        pairs = zip(explained.tolist(), delta.tolist())  # Python floats: doubles, as below
        large = any(abs(d) > DELTA_WARNING * (abs(e) + abs(e - d)) for e, d in pairs)
    else:
        explained, delta = explained.detach().double(), delta.detach().double()
        large = bool((delta.abs() > DELTA_WARNING * (explained.abs() + (explained - delta).abs())).any())
    if large:
        # A constant message, so that Python shows it once per call site rather than per call.
        warnings.warn(
            f"some explanations lost or gained more than {DELTA_WARNING:.0%} of their relevance (see "
            ".delta): biases absorb relevance, so a large delta means biases dominate these outputs, or "
            "a layer lacks a conserving rule (strict=True names uncovered operations).",
            stacklevel=3,
        )
