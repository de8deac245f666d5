"""A direct path for any model ``torch.fx`` can trace whose modules the core's rules compute on
their own: Linear, convolution and transposed convolution layers, BatchNorms, activations,
poolings, reshapes and dropout, under the core's module rules (epsilon, LRP-0, z+, alpha-beta,
gamma, z-box on the input, identity, pass, stop, uniform), with residual adds, concatenations,
crops and reshapes in the model's own ``forward``.

For such a model the scope's machinery (a forward installed on every module, its torch-function
mode, per-module bookkeeping) is what a call costs beyond the arithmetic, one example at a time:
on ``bench adapter``'s residual CNN, the scope's call took 1.55x a gradient where the same rules
written straight through took 1.12x (measured, batch one). Here the model is traced once with
``torch.fx`` and each call runs the traced graph's nodes in order: each module through its rule,
with the :class:`~lrp_domains.core.engine.scope.ModuleCall` a scope would give it (parameters
merged with its BatchNorm the same way), every other node as written; the relevance is read as
the general engine reads it (``read_relevance``: anchors of input-layer rules and hypothetical
contributions included). It is the general engine's, bit for bit (tested); the model is only read.

Which rule each module gets, and which BatchNorms merge, come from a scope of the composite
entered once on the model (and left at once): the plan cannot disagree with the general engine.
The composite's ``first`` rule goes to each affine layer the input reaches directly, or with its
axes permuted (a model written for channels last); a model whose input reaches a layer through
another operation is left to the scope, whose call that is. Anything else goes to the general
engine: a module without a rule or with a rule of the user's, a rule for a whole block, an
operation in ``forward`` outside the gradient-only functional set or with a
functional rule of its own, a ``get_attr`` (a parameter used in ``forward``), an argument without
a default after the input, ``out += x``, operations under ``no_grad`` or autocast, hooks or a
patched ``forward`` anywhere, a softmax, a ledger, sources, strict mode (and everything inside
:func:`disabled`).

A traced graph holds the control flow of the trace: a ``forward`` that branches on an attribute
(``if self.use_skip``) is traced with its value then. So a plan is kept per model only while the
modules are the same objects without hooks, and each module whose ``forward`` is the user's has
the same plain attributes (numbers, strings, booleans, None) as when it was traced: a flag flipped
between calls traces the model again. A ``forward`` that changes a module while it runs (keeps an
activation in an attribute, counts its calls) is not planned: its effects happen on every call in
the general engine, and the modules get back what the trace gave them. What a ``forward`` does
outside the model (appending to a global list) the trace cannot see: such a forward runs once, at
the trace, and not on each call.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lrp_domains.core.canonizers import MergeBatchNorm
from lrp_domains.core.composite import BASE_RULES, Composite
from lrp_domains.core.engine import walk
from lrp_domains.core.engine.fx_trace import ASSERT_IS_NONE, trace
from lrp_domains.core.engine.result import Explanation
from lrp_domains.core.engine.scope import ModuleCall, _functional_table, _MergedNorm, _needs_copy
from lrp_domains.core.engine.sequential import _global_hooks, _hooked
from lrp_domains.core.engine.targets import select_target
from lrp_domains.core.engine.tracking import InputTracker
from lrp_domains.core.functional import PASS_OPS, op_name
from lrp_domains.core.layers import affine_ops
from lrp_domains.core.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Identity,
    Pass,
    Rule,
    Stop,
    Uniform,
    WSquare,
    ZBox,
    ZPlus,
)
from lrp_domains.core.traced_pairs import trace_for

__all__ = ["GraphPlan", "disabled", "frozen", "graph_plan_for"]

#: Affine layers (exact types: a subclass may compute otherwise).
_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
#: Leaf modules a plan may hold (a first look, before any tracing: a model with others, an
#: attention layer or a LayerNorm, say, is not traced at all): the affine layers and the module
#: types every composite has a rule for (activations, poolings, BatchNorms, reshapes, dropout).
_LEAVES = (
    *_AFFINE,
    *(t for key in BASE_RULES for t in (key if isinstance(key, tuple) else (key,)) if isinstance(t, type)),
)
#: The rules a plan runs (exact types): each computes from what a module call gives it (the
#: module's forward, parameters merged or not, the input's anchor), nothing of the scope's.
_RULES = frozenset({Pass, Identity, Stop, Uniform, Epsilon, ZPlus, AlphaBeta, Gamma, ZBox, WSquare, Flat, _MergedNorm})
#: Calls in ``forward`` that return no tensor (shapes, sizes): nothing for a rule to see.
_QUERIES = frozenset({"size", "dim", "numel", "getattr"})
_TENSOR_ATTRIBUTES = frozenset({"shape", "dtype", "device", "ndim"})
_PLAIN = (bool, int, float, str, type(None))
_MISSING = object()


class _Ref:
    """A traced node's value, by its place in the plan."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _spec(value: Any, index: dict[fx.Node, int]) -> Any:
    """A node argument with each node replaced by a :class:`_Ref` (in lists, tuples, dicts and
    slices too: fx hands them over as its immutable kinds; plain ones come back)."""
    if isinstance(value, fx.Node):
        return _Ref(index[value])
    if isinstance(value, (list, tuple)) and any(isinstance(v, fx.Node) or _nested(v) for v in value):
        items = [_spec(v, index) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict) and any(isinstance(v, fx.Node) or _nested(v) for v in value.values()):
        return {k: _spec(v, index) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(_spec(value.start, index), _spec(value.stop, index), _spec(value.step, index))
    if isinstance(value, dict):
        return dict(value)
    return value


def _nested(value: Any) -> bool:
    """Whether ``value`` holds a traced node anywhere inside."""
    if isinstance(value, fx.Node):
        return True
    if isinstance(value, (list, tuple)):
        return any(_nested(v) for v in value)
    if isinstance(value, dict):
        return any(_nested(v) for v in value.values())
    if isinstance(value, slice):
        return _nested(value.start) or _nested(value.stop) or _nested(value.step)
    return False


def _value(spec: Any, env: list) -> Any:
    """:func:`_spec` resolved against the values computed so far."""
    kind = type(spec)
    if kind is _Ref:
        return env[spec.index]
    if kind is list or kind is tuple:
        return kind(_value(v, env) for v in spec)
    if kind is dict:
        return {k: _value(v, env) for k, v in spec.items()}
    if kind is slice:
        return slice(_value(spec.start, env), _value(spec.stop, env), _value(spec.step, env))
    return spec


def _content(value: Any) -> Any:
    """A key for what ``value`` computes: plain values and types themselves, tuples by their items,
    a rule or canonizer by its type and attributes (a composite made again by name has new rule
    objects of the same content), anything else by identity (a predicate, a tensor)."""
    if type(value) in _PLAIN or isinstance(value, type):
        return value
    if type(value) is tuple:
        return tuple(_content(v) for v in value)
    if isinstance(value, (Rule, MergeBatchNorm)):
        return (type(value), tuple((k, _content(v)) for k, v in sorted(vars(value).items())))
    return ("object", id(value))


def _composite_key(composite: Composite) -> tuple:
    """What resolving ``composite``'s rules reads, by content (:func:`_content`)."""
    rules = tuple((_content(key), _content(rule)) for key, rule in composite.rules.items())
    functional = tuple((name, id(rule)) for name, rule in composite.functional.items())
    canonizers = tuple(_content(c) for c in composite.canonizers)
    return (type(composite), rules, functional, _content(composite.first), _content(composite.last), canonizers)


def _attributes(modules: list[nn.Module]) -> tuple:
    """The plain attributes (numbers, strings, booleans, None) of each module whose ``forward`` is
    not torch's own: the flags a traced ``forward`` may have branched on."""
    return tuple(
        tuple((k, v) for k, v in module.__dict__.items() if type(v) in _PLAIN)
        for module in modules
        if not type(module).__module__.startswith("torch.")
    )


_disabled = 0  # how many disabled() blocks are open


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Every model to the general engine inside the block (in any thread): to compare the two, or
    for a ``forward`` with effects outside the model that must happen on every call."""
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


@contextlib.contextmanager
def frozen(modules: list[nn.Module]) -> Iterator[None]:
    """Each parameter of ``modules`` with ``requires_grad`` switched off for the block (each once,
    given back afterwards, also after an error), as a scope does for its call: autograd then records
    nothing through the parameters, and operations that choose their kernel by which operands
    record gradients (``matmul`` folding a batch of one into one product) choose as they do in the
    general engine, so the relevance is the same bit for bit."""
    saved: list[torch.Tensor] = []
    seen: set[int] = set()
    try:
        for module in modules:
            for param in module._parameters.values():
                if param is not None and param.requires_grad and id(param) not in seen:
                    seen.add(id(param))
                    param.requires_grad_(False)
                    saved.append(param)
        yield
    finally:
        for frozen_param in saved:
            frozen_param.requires_grad_(True)


#: Per model, the last plan made for it: what it was made from, and the plan (or None).
_PLANS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, GraphPlan | None]] = weakref.WeakKeyDictionary()


def graph_plan_for(
    model: nn.Module, composite: Composite, x: torch.Tensor, modules: list[nn.Module] | None = None
) -> GraphPlan | None:
    """A plan when ``model`` is such a model for ``composite`` (module docstring), else None; kept
    per model while the composite's content, the modules (the same objects, without hooks) and
    the plain attributes of modules with a ``forward`` of their own are the same. ``x``: a batch of
    the call (tracing the BatchNorm pairs of a model shaped otherwise than a Sequential runs it
    once, as the general engine does); ``modules``: ``list(model.modules())`` when walked already.
    Call it with the model in eval mode."""
    if _disabled or _global_hooks():
        return None
    if modules is None:
        modules = walk.modules(model)
    for module in modules:
        if _hooked(module):
            return None
    made_from = (_composite_key(composite), tuple(map(id, modules)), _attributes(modules))
    kept = _PLANS.get(model)
    if kept is not None and kept[0] == made_from:
        return kept[1]
    plan = _plan(model, composite, modules, x)
    _PLANS[model] = (made_from, plan)
    return plan


def _plan(model: nn.Module, composite: Composite, modules: list[nn.Module], x: torch.Tensor) -> GraphPlan | None:
    if any(type(c) is not MergeBatchNorm for c in composite.canonizers):
        return None
    if any(not m._modules and not isinstance(m, _LEAVES) for m in modules):
        return None  # a module the plan never computes: not worth a trace
    if any(isinstance(m, _AFFINE) and m._modules for m in modules):
        return None
    if composite.first is not None and type(composite.first) not in _RULES:
        return None
    rules, pairs = _scope_rules(model, composite, x)
    for module in modules:
        rule = rules.get(id(module))
        if module._modules or module is model:
            if rule is not None:
                return None  # a rule for a whole block (or the model): the general engine applies it to the block
        elif type(rule) not in _RULES:
            return None  # no rule (the functional rules apply inside), or a rule of the user's: not worth a trace
    graph = trace(modules, model)
    return None if graph is None else _steps(model, composite, graph, rules, pairs)


def _scope_rules(
    model: nn.Module, composite: Composite, x: torch.Tensor
) -> tuple[dict[int, Any], list[tuple[nn.Module, _BatchNorm]]]:
    """The rule a scope of ``composite`` installs on each module (by id), and the pairs it merges
    (in its order), read from a scope entered and left at once."""
    scope = composite.context(model)
    named = scope.named_modules()
    scope.traced_pairs = trace_for(model, composite, x, [m for _, m in named])
    with scope:
        return scope.installed()


def _steps(
    model: nn.Module,
    composite: Composite,
    graph: fx.Graph,
    rules: dict[int, Any],
    pairs: list[tuple[nn.Module, _BatchNorm]],
) -> GraphPlan | None:
    table = _functional_table(composite)
    merged_into = {id(layer): index for index, (layer, _) in enumerate(pairs)}
    names = {id(module): name for name, module in walk.named_modules(model)}
    index: dict[fx.Node, int] = {}
    steps: list[Callable[[list, InputTracker], Any]] = []
    output: Any = _MISSING
    for node in graph.nodes:
        if node.op == "placeholder":
            if index:  # an argument after the input: its default (fx_trace), as the engine calls the model
                if not node.args:
                    return None
                index[node] = len(steps)
                steps.append(_constant(node.args[0]))
                continue
            passed_on = [user for user in node.users if not _query(user)]
            if composite.first is not None and not all(
                _module_of(model, user) is not None or _permutes_into_layers(model, user) for user in passed_on
            ):
                return (
                    None  # the input reaches a layer through an operation: the scope's call, whether it claims `first`
                )
            index[node] = 0
            steps.append(_input)
            continue
        if node.op == "output":
            output = _spec(node.args[0], index)
            break
        if node.op == "call_function" and node.target is ASSERT_IS_NONE:
            index[node] = len(steps)  # fx's guard on an argument traced as None: it is None (its default)
            steps.append(_constant(None))
            continue
        args, kwargs = _spec(node.args, index), _spec(node.kwargs, index)
        step: Callable[[list, InputTracker], Any] | None = None
        if node.op == "call_module":
            module = model.get_submodule(str(node.target))
            rule = rules.get(id(module))
            source = node.args[0] if len(node.args) == 1 and isinstance(node.args[0], fx.Node) else None
            # the input itself, or the input with its axes permuted (a model written for channels last)
            on_input = source is not None and (source.op == "placeholder" or _permuted_input(source))
            claims_first = composite.first is not None and affine_ops(module) is not None and on_input
            if claims_first:
                rule = composite.first
            elif composite.first is not None and on_input:
                return None  # not an affine layer: the scope would run the module's own rule on the input
            if (
                type(rule) in _RULES
                and not module._modules
                and not kwargs
                and not (getattr(rule, "writes_relevance", False) and not claims_first)
                and _merged_as_scoped(model, node, module, merged_into, pairs)
            ):
                norm = pairs[merged_into[id(module)]][1] if id(module) in merged_into else None
                call = ModuleCall(module, names[id(module)], module.forward, norm, pairs)
                step = _module_step(call, cast(Rule, rule), args, claims_first)
        elif node.op in ("call_function", "call_method"):
            step = _function_step(node, args, kwargs, table)
        # else get_attr: a parameter or buffer used in forward (its functional rule applies)
        if step is None:
            return None
        index[node] = len(steps)
        steps.append(step)
    if output is _MISSING or not index:
        return None
    return GraphPlan(steps, output)


def _input(env: list, tracker: InputTracker) -> Any:
    return env[0]


def _constant(value: Any) -> Callable[[list, InputTracker], Any]:
    def step(env: list, tracker: InputTracker) -> Any:
        return value

    return step


#: Calls that permute a tensor's axes (``x.permute(0, 2, 1)``, ``x.transpose(1, 2)``): a view of
#: the input holding every entry once, which the tracker takes for the input.
_PERMUTES = frozenset({"permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis"})


def _permuted_input(node: fx.Node) -> bool:
    """Whether ``node`` permutes the model's input (its first argument is the input)."""
    if node.op not in ("call_method", "call_function") or not node.args:
        return False
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", None)
    source = node.args[0]
    return name in _PERMUTES and isinstance(source, fx.Node) and source.op == "placeholder"


def _permutes_into_layers(model: nn.Module, node: fx.Node) -> bool:
    """Whether ``node`` permutes the input and hands the result to affine layers alone (each then
    claims the input-layer rule, as in a scope)."""
    if not _permuted_input(node):
        return False
    users = [user for user in node.users if not _query(user)]
    return bool(users) and all(
        (module := _module_of(model, user)) is not None and affine_ops(module) is not None for user in users
    )


def _query(node: fx.Node) -> bool:
    """A node that reads a tensor's shape, size or type and passes no tensor on."""
    if node.op == "call_method":
        return node.target in _QUERIES
    return (
        node.op == "call_function"
        and node.target is getattr
        and len(node.args) == 2
        and node.args[1] in _TENSOR_ATTRIBUTES
    )


def _module_of(model: nn.Module, node: fx.Node) -> nn.Module | None:
    """The module a ``call_module`` node calls (None for other nodes)."""
    return model.get_submodule(str(node.target)) if node.op == "call_module" else None


def _merged_as_scoped(
    model: nn.Module, node: fx.Node, module: nn.Module, merged_into: dict[int, int], pairs: list
) -> bool:
    """Whether the graph computes a merged pair as the scope does: the layer's output goes to its
    BatchNorm alone, and the BatchNorm takes that output alone (else the merge would change what
    another node sees)."""
    merge = merged_into.get(id(module))
    if merge is not None:
        users = list(node.users)
        norm = pairs[merge][1]
        return len(users) == 1 and _module_of(model, users[0]) is norm
    for layer, norm in pairs:
        if norm is module:
            source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
            return isinstance(source, fx.Node) and _module_of(model, source) is layer and len(source.users) == 1
    return True


def _module_step(call: ModuleCall, rule: Rule, args: tuple, claims_first: bool) -> Callable[[list, InputTracker], Any]:
    """``rule(call, args, {})`` as the scope runs it (a copy first for an in-place activation on the
    explained path); for a layer on the model's input under the composite's ``first`` rule, with a
    call of its own per forward that writes to that forward's input anchor."""
    inplace = call.module.__dict__.get("inplace") is True
    if claims_first:
        module, name, original, norm, group = call.module, call.name, call.original, call.merged_with, call.merge_group

        source = args[0].index if len(args) == 1 and type(args[0]) is _Ref else 0

        def first(env: list, tracker: InputTracker) -> Any:
            own = ModuleCall(module, name, original, norm, group, tracker)
            return rule(own, (env[source],), {})

        return first
    if len(args) == 1 and type(args[0]) is _Ref:
        source = args[0].index

        def single(env: list, tracker: InputTracker) -> Any:
            x = env[source]
            if inplace and isinstance(x, torch.Tensor) and x.requires_grad:
                x = x.clone()
            return rule(call, (x,), {})

        return single

    def step(env: list, tracker: InputTracker) -> Any:
        values = _value(args, env)
        if inplace and _needs_copy(values):
            values = (values[0].clone(), *values[1:])
        return rule(call, values, {})

    return step


def _function_step(node: fx.Node, args: tuple, kwargs: dict, table: dict) -> Callable[[list, InputTracker], Any] | None:
    target = node.target
    function: Callable
    if node.op == "call_method":
        assert isinstance(target, str)
        name = target

        def function(self: Any, *rest: Any, **named: Any) -> Any:
            return getattr(self, name)(*rest, **named)

    else:
        assert callable(target)
        function, name = target, op_name(target)
    if name == "getattr":
        if len(node.args) != 2 or node.args[1] not in _TENSOR_ATTRIBUTES:
            return None
    elif name not in _QUERIES:
        names = {name, f"__{name}__"}  # operator.add for ``a + b``: Tensor.__add__ to the scope's mode
        if not names & PASS_OPS or any(table.get(n) is not None for n in names):
            return None  # not a gradient-only operation for the scope: its rule (or report) applies

    def step(env: list, tracker: InputTracker) -> Any:
        return function(*_value(args, env), **_value(kwargs, env))

    return step


class _Inputs:
    """What :func:`~lrp_domains.core.engine.attribution.read_relevance` reads of a scope: where
    relevance is read (one forward's :class:`InputTracker`)."""

    __slots__ = ("inputs",)

    def __init__(self, inputs: InputTracker) -> None:
        self.inputs = inputs


class GraphPlan:
    """The traced graph of one model as steps, each computing its node's value from those before."""

    def __init__(self, steps: list[Callable[[list, InputTracker], Any]], output: Any) -> None:
        self.steps = steps
        self.output = output

    def forward(self, x: torch.Tensor, tracker: InputTracker) -> Any:
        """The model's output for ``x``, with the rules' gradients attached; ``x`` is the leaf
        ``tracker.track`` made of the batch (where an input-layer rule writes)."""
        env: list = [None] * len(self.steps)
        env[0] = x
        for position, step in enumerate(self.steps):
            env[position] = step(env, tracker)
        return _value(self.output, env)

    def explain_batch(
        self,
        x: torch.Tensor,
        target: torch.Tensor | Callable | None,
        hypothetical: bool = False,
        output: Callable[[Any, Any], torch.Tensor] | None = None,
    ) -> Explanation:
        """One batch as the general engine explains it (``_explain_one``, with the same reading of
        the relevance; run the model in eval mode, with gradients on)."""
        from lrp_domains.core.engine.attribution import default_output, read_relevance

        tracker = InputTracker()
        tracker.capture_hypothetical = hypothetical
        (leaf,) = tracker.track([x])
        picked = (output or default_output)(self.forward(leaf, tracker), x)
        explained, index = select_target(picked, target)
        relevance, _, input_grads, _ = read_relevance(_Inputs(tracker), [leaf], explained.sum(), None)
        units = tracker.hypothetical(leaf, input_grads[0]).detach() if hypothetical else None
        return Explanation.build(relevance[0], picked.detach(), index, explained.detach(), units, {})
