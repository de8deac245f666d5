"""The scoped engine: a composite applied to one model instance, undone on exit.

Inside ``with composite.context(model) as scope:`` every submodule of ``model`` that has a rule
computes its forward through that rule (per-instance ``forward`` attributes, no class-level or
process-wide patch), parameters do not require grad, and functional calls in ``forward`` run
under :class:`~lrp_domains.core.functional.FunctionalRules`. On exit, also after an exception,
each module gets back exactly the ``forward`` attribute it had (or none) and each parameter its
``requires_grad`` flag. The model's outputs inside equal those outside: rules change only the
backward pass (a merged BatchNorm changes outputs by rounding only). A module with ``inplace=True``
(``nn.ReLU(inplace=True)``) computes on a copy of its input: a forward that calls one for its side
effect alone, ignoring what it returns, is not explained as it runs.

A scope has three parts: this lifecycle and call stack; :class:`~lrp_domains.core.engine.coverage.Coverage`
(operations without a rule); :class:`~lrp_domains.core.engine.tracking.InputTracker` (where relevance is
read). Rules see none of them: a rule gets a :class:`ModuleCall`, the module as a rule needs it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lrp_domains.core.canonizers import MergeBatchNorm
from lrp_domains.core.engine import walk
from lrp_domains.core.engine.coverage import Coverage, LRPCoverageError
from lrp_domains.core.engine.ledger import Ledger, unintercepted
from lrp_domains.core.engine.sequential import BLOCK_TYPES, SequentialPlan, block_plan, fused_block
from lrp_domains.core.engine.tracking import InputTracker
from lrp_domains.core.functional import FunctionalRules, default_table
from lrp_domains.core.layers import AffineOps, affine_ops, parameters_of
from lrp_domains.core.rules import Pass, Rule

if TYPE_CHECKING:
    from lrp_domains.core.composite import Composite

__all__ = ["LRPCoverageError", "ModuleCall", "Scope", "covered", "current_scope"]

_MISSING = object()
_SCOPES = threading.local()


def _active_scopes() -> list:
    stack = getattr(_SCOPES, "stack", None)
    if stack is None:
        stack = _SCOPES.stack = []
    return stack


#: Per Sequential, its latest fused-block plan and what it was made from (Scope._block_plan).
_BLOCK_PLANS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, SequentialPlan | None]] = weakref.WeakKeyDictionary()

#: Per composite, its functional rules with the built-in ones (what they were made from, the table).
_TABLES: weakref.WeakKeyDictionary[Any, tuple[tuple, dict]] = weakref.WeakKeyDictionary()
#: Per layer, its parameters and their detached views, kept so that a layer's parameters are the
#: same tensors from call to call (what :mod:`lrp_domains.core.derived` keeps its tensors by).
_DETACHED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, tuple[torch.Tensor, torch.Tensor | None]]] = (
    weakref.WeakKeyDictionary()
)


def detached_parameters(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A layer's weight and bias detached, the same view objects from call to call while the
    module holds the same parameters on the same storage (a view shares its parameter's version
    counter, so changes in place show through it; a parameter replaced, or given new ``.data``,
    is viewed anew)."""
    weight, bias = parameters_of(module)
    storage = tuple(
        None if t is None else (t.data_ptr(), t.shape, t.stride(), t.dtype, t.device) for t in (weight, bias)
    )
    kept = _DETACHED.get(module)
    if kept is not None:
        (kept_weight, kept_bias, kept_storage), views = kept
        if kept_weight is weight and kept_bias is bias and kept_storage == storage:
            return views
    views = (weight.detach(), None if bias is None else bias.detach())
    _DETACHED[module] = ((weight, bias, storage), views)
    return views


def _functional_table(composite: Composite) -> dict:
    """The built-in functional rules updated with the composite's own, made once per composite
    (again when its ``functional`` mapping changes); scopes only read it."""
    own = tuple(composite.functional.items())
    kept = _TABLES.get(composite)
    if (
        kept is not None
        and len(kept[0]) == len(own)
        and all(a[0] == b[0] and a[1] is b[1] for a, b in zip(kept[0], own))
    ):
        return kept[1]
    table = default_table()
    table.update(composite.functional)
    _TABLES[composite] = (own, table)
    return table


#: Per model, the rules its composite gave its modules, and what they were resolved from.
_RESOLVED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, list[Rule | None]]] = weakref.WeakKeyDictionary()


def _resolved_rules(model: nn.Module, composite: Composite, named: list[tuple[str, nn.Module]]) -> list:
    """``composite.rule_for(name, module)`` for each named module, kept per model while the
    composite's rules are the same objects and the modules the same names, objects and types (a
    scope resolves every module on each call: for one example at a time, several percent of the
    call). A predicate key is asked again only when its module changes."""
    made_from = (
        id(composite),
        tuple((key, id(rule)) for key, rule in composite.rules.items()),
        tuple((name, id(module), type(module)) for name, module in named),
    )
    kept = _RESOLVED.get(model)
    if kept is not None and kept[0] == made_from:
        return kept[1]
    rules = [composite.rule_for(name, module) for name, module in named]
    _RESOLVED[model] = (made_from, rules)
    return rules


def _needs_copy(args: tuple) -> bool:
    """Whether the first argument is a tensor on the explained path (it requires grad)."""
    return bool(args) and isinstance(args[0], torch.Tensor) and args[0].requires_grad


def current_scope() -> Scope | None:
    """The scope whose model is running a forward in this thread (innermost), if any."""
    stack = _active_scopes()
    return stack[-1] if stack else None


@contextlib.contextmanager
def covered() -> Iterator[None]:
    """A region whose torch calls a rule has taken care of (no functional rules, no coverage
    reports), in the scope running in this thread; nothing outside a scope."""
    scope = current_scope()
    with scope.covered() if scope is not None else contextlib.nullcontext():
        yield


@dataclass
class ModuleCall:
    """One module as a rule sees it: its original forward, functional form and parameters, and
    (for input-layer rules) where it may write relevance directly."""

    module: nn.Module
    name: str
    original: Callable
    merged_with: _BatchNorm | None = None
    #: Every (layer, BatchNorm) pair merged in the model: merged together, once per call.
    merge_group: list = field(default_factory=list, repr=False)
    _inputs: InputTracker | None = field(default=None, repr=False)
    #: The rule this module ran with in its latest call (the composite's ``first`` rule where it
    #: claimed the input).
    applied: Rule | None = field(default=None, repr=False)
    #: While the call runs under a ledger: how an anchor is tapped for this call's row.
    ledger_tap: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    _ops: Any = field(default=_MISSING, repr=False)

    @property
    def ops(self) -> AffineOps | None:
        """The module as an affine layer (None when it is not one); built on first use (by hand:
        ``functools.cached_property`` takes a lock on every read in this Python)."""
        ops = self._ops
        if ops is _MISSING:
            ops = self._ops = affine_ops(self.module)
        return ops

    @property
    def merged(self) -> bool:
        """True while a BatchNorm is merged into this layer (the norm is in eval mode)."""
        return self.merged_with is not None and not self.merged_with.training

    def params(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias (merged with the following BatchNorm where one is), detached."""
        norm = self.merged_with
        if norm is not None and not norm.training:  # self.merged, spelled out for the type checker
            return MergeBatchNorm.merged_parameters(self.module, norm, self.merge_group)
        return detached_parameters(self.module)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output for ``x`` with :meth:`params` (merged or not)."""
        if self.ops is None:
            return self.original(x)
        return self.ops.forward(x, *self.params())

    def describe(self) -> str:
        """``'features.0' (Conv1d)`` for messages."""
        return f"'{self.name or '<model>'}' ({type(self.module).__name__})"

    def input_layer(self, x: torch.Tensor) -> tuple[torch.Tensor | None, Callable[[torch.Tensor], None] | None]:
        """For a rule that writes relevance directly: the anchor collecting the relevance of input
        ``x`` and where to file hypothetical contributions; ``(None, None)`` when ``x`` is not a
        tracked model input (the rule then expresses its relevance as ``x * g``)."""
        if self._inputs is None:
            return None, None
        anchor = self._inputs.anchor_for(x, self.describe())
        if anchor is None:
            return None, None
        recorder = self._inputs.recorder(anchor)
        return (anchor if self.ledger_tap is None else self.ledger_tap(anchor)), recorder


#: Every type :func:`~lrp_domains.core.layers.affine_ops` takes (and more): a module that may claim
#: the input layer's rule.
_AFFINE_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def _passes_through(rule: Rule | None) -> TypeGuard[Rule]:
    """Whether ``rule`` is the module's own gradient (:class:`~lrp_domains.core.rules.Pass`) or a
    merged BatchNorm's pass-through (in eval mode; :meth:`Scope._run_leaf` checks)."""
    return type(rule) is Pass or type(rule) is _MergedNorm


class _MergedNorm(Rule):
    """A BatchNorm merged into the layer before it: passes its input through (eval mode)."""

    cost = 0  # merged into the layer before it: nothing of its own

    def __init__(self, fallback: Rule | None) -> None:
        self.fallback = fallback

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        if not call.module.training:
            return args[0]
        if self.fallback is None:
            return call.original(*args, **kwargs)
        return self.fallback(call, args, kwargs)


@dataclass
class _ThreadState:
    stack: list = field(default_factory=list)
    depth: int = 0
    first_claimed: bool = False
    #: The latest softmax of this forward on input-dependent tensors: (output, input, its uncovered key).
    softmax: tuple | None = None


class Scope:
    """A composite applied to a model; use as a context manager (``composite.context(model)``).

    ``coverage`` holds the operations without a rule, ``inputs`` where relevance is read
    (:meth:`track` registers the inputs of the next forward).
    """

    def __init__(self, model: nn.Module, composite: Composite) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.composite = composite
        self.calls: dict[int, ModuleCall] = {}
        self.coverage = Coverage()
        self.inputs = InputTracker()
        self._saved_forwards: list[tuple[nn.Module, Any]] = []
        self._saved_flags: list[tuple[nn.Parameter, bool]] = []
        self._merged: dict[int, _BatchNorm] = {}
        self._merge_group: list[tuple[nn.Module, _BatchNorm]] = []
        self._undo: list[Callable[[], None]] = []
        self._local = threading.local()
        self._mode = FunctionalRules(self, _functional_table(composite))
        self._active = False
        self._softmax_warned = False
        #: While set (``explain(..., ledger=True)``), the taps of the current pass
        #: (:mod:`lrp_domains.core.engine.ledger`).
        self.ledger: Ledger | None = None
        #: Per module (by id), whether its forward maps zero to zero (see _maps_zero_to_zero).
        self._zero_to_zero: dict[int, bool] = {}
        #: Per module (by id), the rule installed on it; modules whose forward the user had patched.
        self._rules: dict[int, Rule | None] = {}
        self._user_forwards: set[int] = set()
        #: Layer -> BatchNorm pairs found in a traced forward, for MergeBatchNorm (set before entering;
        #: :func:`~lrp_domains.core.traced_pairs.trace_for`).
        self.traced_pairs: list[tuple[nn.Module, _BatchNorm]] = []
        #: Per Sequential (by id), its fused plan, or None (see _fused).
        self._block_plans: dict[int, Any] = {}
        self._named: list[tuple[str, nn.Module]] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Scope:
        if self._active:
            raise RuntimeError("this scope is already active; create a new one with composite.context(model)")
        try:
            self._apply()
        except BaseException:
            self._restore()
            raise
        self._active = True
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self._restore()
        self._active = False
        return False

    def _apply(self) -> None:
        for canonizer in self.composite.canonizers:
            undo = canonizer.apply(self.model, self)
            if undo is not None:
                self._undo.append(undo)
        norms = {id(norm) for norm in self._merged.values()}
        named = self.named_modules()
        last = None
        if self.composite.last is not None:
            last = next((m for _, m in reversed(named) if affine_ops(m) is not None), None)
        resolved = _resolved_rules(self.model, self.composite, named)
        for (name, module), found in zip(named, resolved):
            rule = self.composite.last if module is last else found
            if id(module) in norms:
                rule = _MergedNorm(rule)
            self._install(name, module, rule, self._merged.get(id(module)))
        seen: set[int] = set()  # model.parameters() from the walk at hand (a shared parameter once)
        for _, module in named:
            for param in module._parameters.values():
                if param is not None and param.requires_grad and id(param) not in seen:
                    seen.add(id(param))
                    self._saved_flags.append((param, True))
                    param.requires_grad_(False)

    def _install(self, name: str, module: nn.Module, rule: Rule | None, merged_with: _BatchNorm | None) -> None:
        original = module.forward
        self._rules[id(module)] = rule
        if "forward" in module.__dict__:
            self._user_forwards.add(id(module))
        call = ModuleCall(module, name, original, merged_with, self._merge_group, self.inputs)
        self.calls[id(module)] = call
        is_root = module is self.model

        if (
            _passes_through(rule)
            and not module._modules
            and not is_root
            and (self.composite.first is None or not isinstance(module, _AFFINE_TYPES))
        ):

            def forward(*args: Any, **kwargs: Any) -> Any:
                return self._run_leaf(call, rule, args, kwargs)

        else:

            def forward(*args: Any, **kwargs: Any) -> Any:
                return self._run(call, rule, is_root, args, kwargs)

        # inspect.signature(module.forward) follows __wrapped__: code that reads the forward's
        # signature (transformers does) sees the original one.
        forward.__dict__["__wrapped__"] = original
        self._saved_forwards.append((module, module.__dict__.get("forward", _MISSING)))
        # An instance attribute shadows the class's forward for this instance only.
        module.__dict__["forward"] = forward

    def _restore(self) -> None:
        self._state().softmax = None
        self._named = None  # walked again if the scope is entered again
        self._merged.clear()  # and its canonizers register their pairs again
        self._merge_group.clear()
        for module, saved in reversed(self._saved_forwards):
            if saved is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = saved
        self._saved_forwards.clear()
        for param, flag in self._saved_flags:
            param.requires_grad_(flag)
        self._saved_flags.clear()
        errors = []
        while self._undo:
            try:
                self._undo.pop()()
            except Exception as error:  # undo the rest before reporting
                errors.append(error)
        if errors:
            raise errors[0]

    def installed(self) -> tuple[dict[int, Rule | None], list[tuple[nn.Module, _BatchNorm]]]:
        """While the scope is active: the rule installed on each module (by id; a merged
        BatchNorm's pass-through included) and the (layer, BatchNorm) pairs merged, in their order."""
        return dict(self._rules), list(self._merge_group)

    def named_modules(self) -> list[tuple[str, nn.Module]]:
        """``list(model.named_modules())``, walked once per scope (canonizers and the rules share it)."""
        if self._named is None:
            self._named = walk.named_modules(self.model)
        return self._named

    def merge(self, layer: nn.Module, norm: _BatchNorm) -> None:
        """Compute ``layer`` with ``norm`` merged into it, for this scope (used by canonizers)."""
        self._merged[id(layer)] = norm
        self._merge_group.append((layer, norm))

    # -- running a module ------------------------------------------------------------------
    def _state(self) -> _ThreadState:
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _ThreadState()
        return state

    def _run(self, call: ModuleCall, rule: Rule | None, is_root: bool, args: tuple, kwargs: dict) -> Any:
        # Every module call of the model comes through here: one example at a time (and on a GPU)
        # its Python is part of what a call costs, so the common case is spelled out inline.
        state = getattr(self._local, "state", None) or self._state()
        outermost = state.depth == 0
        if outermost:
            state.first_claimed = False
            self._mode.__enter__()
            _active_scopes().append(self)
        state.depth += 1
        if self.composite.first is not None and call.ops is not None and self._claims_first(args):
            rule = self.composite.first
        call.applied = rule
        ledger = self.ledger
        stack = state.stack
        key = None if ledger is None else self._ledger_key(call, rule, stack)
        # Functional calls are ours to rule only where no enclosing module has a rule.
        stack.append((call, rule is None and (not stack or stack[-1][1])))
        try:
            # LRP-0 on an affine layer: what it absorbs is read off the output gradient alone
            bias, has_bias = None, False
            if key is not None:
                assert ledger is not None and rule is not None  # a key is made for a ruled module under a ledger
                with unintercepted():
                    bias = rule.ledger_bias(call)
                    has_bias = bias is not None and bias.numel() > 0
                if bias is None:
                    args = tuple(ledger.tap(key, a, "in") for a in args)
                    kwargs = {k: ledger.tap(key, v, "in") for k, v in kwargs.items()}
                    call.ledger_tap = functools.partial(ledger.tap_written, key)
            if rule is None:
                output = self._fused(call, args, kwargs) if type(call.module) is nn.Sequential else None
                if output is None:
                    output = call.original(*args, **kwargs)
            else:
                if call.module.__dict__.get("inplace") is True and _needs_copy(args):
                    # an in-place activation would overwrite a layer output that the layer's rule keeps
                    # for the backward (gamma, alpha-beta, z+): it computes on a copy instead
                    with unintercepted():
                        args = (args[0].clone(), *args[1:])
                # The rule runs with our torch-function mode off the stack: inside a module computed
                # by its rule the functional rules are inactive (functional_active), and the mode
                # would pass every torch call through unchanged at a Python dispatch each (a merged
                # layer's parameters, the rule's own autograd Function, the module's forward). A
                # mode above ours (pushed inside the model) is left in place, and then ours stays.
                depth = torch._C._len_torch_function_stack()
                if depth == 0 or torch._C._get_function_stack_at(depth - 1) is not self._mode:
                    output = rule(call, args, kwargs)
                else:
                    mode = torch._C._pop_torch_function_stack()
                    try:
                        output = rule(call, args, kwargs)
                    finally:
                        torch._C._push_on_torch_function_stack(mode)
            if key is not None:
                assert ledger is not None
                if bias is not None:
                    if has_bias:
                        channels = -1 if isinstance(call.module, (nn.Linear, nn.LayerNorm)) else 1  # convolutions: 1
                        output = ledger.tap_bias(key, output, bias, channels)
                else:
                    output = ledger.tap_all(key, output, "out")
            sources = self.inputs.source_names
            if sources and call.name in sources:
                with self.covered():
                    output = self.inputs.source_output(call.name, output)
            return output
        finally:
            call.ledger_tap = None
            stack.pop()
            state.depth -= 1
            if outermost:
                _active_scopes().pop()
                self._mode.__exit__(None, None, None)

    def _run_leaf(self, call: ModuleCall, rule: Rule, args: tuple, kwargs: dict) -> Any:
        """:meth:`_run` for a module without children whose rule is its own gradient (an activation,
        a pooling, a reshape: :class:`~lrp_domains.core.rules.Pass`) or a merged BatchNorm's
        pass-through, inside the model's forward with no ledger and no sources: with our mode off
        the stack nothing in it consults the scope's per-thread state, so the rule runs without it
        (a model of such modules is mostly these, one example at a time)."""
        depth = torch._C._len_torch_function_stack()
        if (
            self.ledger is not None
            or self.inputs.source_names
            or (call.module.training and type(rule) is _MergedNorm)  # then the norm's own rule runs
            or depth == 0
            or torch._C._get_function_stack_at(depth - 1) is not self._mode
        ):
            return self._run(call, rule, False, args, kwargs)
        call.applied = rule
        if call.module.__dict__.get("inplace") is True and _needs_copy(args):
            with unintercepted():  # as in _run: the layer before may keep the tensor for its backward
                args = (args[0].clone(), *args[1:])
        mode = torch._C._pop_torch_function_stack()
        try:
            return rule(call, args, kwargs)
        finally:
            torch._C._push_on_torch_function_stack(mode)

    def _fused(self, call: ModuleCall, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """An MLP block (an ``nn.Sequential`` of Linear layers, ReLUs and shape-only modules
        anywhere in the model) as one autograd node computing the rules its modules have
        (:func:`~lrp_domains.core.engine.sequential.block_plan`): the per-module forwards, mode
        dispatch and autograd Functions are what a small block's time is made of. None where the
        block is not such an MLP, or the ledger, a source inside it or the input layer's rule needs
        its modules one by one."""
        module = call.module
        assert isinstance(module, nn.Sequential)  # without a rule of its own: the caller checks both
        if self.ledger is not None or kwargs:
            return None
        with unintercepted():  # the checks' tensor properties and the block's rules: nothing for the mode
            return self._fused_block(call, module, args)

    def _fused_block(self, call: ModuleCall, module: nn.Sequential, args: tuple) -> torch.Tensor | None:
        x = args[0] if len(args) == 1 else None
        if not isinstance(x, torch.Tensor) or not x.requires_grad or not x.is_floating_point():
            return None
        if self.composite.first is not None and not (self.inputs.leaves and not self.inputs.sees_input(x)):
            return None  # the input layer's rule may be claimed inside the block
        prefix = f"{call.name}." if call.name else ""
        if any(name == call.name or name.startswith(prefix) for name in self.inputs.source_names):
            return None
        plan = self._block_plans.get(id(module), _MISSING)
        if plan is _MISSING:
            plan = self._block_plans[id(module)] = self._block_plan(module)
        return None if plan is None else fused_block(x, plan)

    def _block_plan(self, module: nn.Sequential) -> SequentialPlan | None:
        """The block's plan, kept per Sequential between scopes while what it was made from is the
        same: each module, the rule this scope gave it, its mode and hooks, and whether it is merged
        or has a patched forward (one example at a time, making it was a twentieth of a call)."""
        children = list(module._modules.values())
        if not all(type(child) in BLOCK_TYPES for child in children):
            return None  # block_plan takes these types only, whatever their rules, modes and hooks
        made_from = tuple(
            (
                id(child),
                id(self._rules.get(id(child))),
                child.training,
                bool(child._forward_hooks or child._forward_pre_hooks or child._backward_hooks),
                bool(getattr(child, "_backward_pre_hooks", None) or child._modules),
                id(child) in self._merged or id(child) in self._user_forwards,
            )
            for child in children
            if child is not None
        )
        kept = _BLOCK_PLANS.get(module)
        if kept is not None and kept[0] == made_from:
            return kept[1]
        taken = any(entry[5] for entry in made_from)
        plan = None if taken else block_plan(module, lambda m: self._rules.get(id(m)))
        _BLOCK_PLANS[module] = (made_from, plan)
        return plan

    def _ledger_key(self, call: ModuleCall, rule: Rule | None, stack: list) -> tuple[str, str] | None:
        """The ledger row of this call, when it is tapped: a module computing with a rule that
        changes relevance (not Pass: its gradient moves relevance unchanged; not in place: a tap
        is a view), outside any rule's own computation."""
        if self.ledger is None or rule is None or isinstance(rule, (Pass, _MergedNorm)):
            return None
        if getattr(call.module, "inplace", False) or not all(active for _, active in stack):
            return None
        if rule.preserves_relevance and self._maps_zero_to_zero(call):
            return None  # R_in = R_out exactly: nothing to absorb, and its taps would cost the most
        return (call.name or "<model>", repr(rule))

    def _maps_zero_to_zero(self, call: ModuleCall) -> bool:
        """Whether the module's own forward maps a zero input to zero (an identity-type rule
        then loses nothing where the input is zero); asked once per module."""
        known = self._zero_to_zero.get(id(call.module))
        if known is None:
            parameter = next(call.module.parameters(), None)
            zero = (
                torch.zeros(1) if parameter is None else torch.zeros(1, dtype=parameter.dtype, device=parameter.device)
            )
            try:
                with torch.no_grad(), self.covered():
                    out = call.original(zero)
                known = isinstance(out, torch.Tensor) and out.shape == zero.shape and not bool(out.any())
            except Exception:  # noqa: BLE001 - a module that does not take one number: tap it
                known = False
            self._zero_to_zero[id(call.module)] = known
        return known

    def ledger_label(self) -> str:
        """The name of the innermost running module, for the rows of functional operations."""
        stack = self._state().stack
        call = next((entry[0] for entry in reversed(stack) if entry[0] is not None), None)
        return (call.name or "<model>") if call is not None else "<model>"

    def _claims_first(self, args: tuple) -> bool:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if self.inputs.leaves:
            return x is not None and self.inputs.sees_input(x)
        state = self._state()
        if state.first_claimed:
            return False
        state.first_claimed = True
        return True

    @contextlib.contextmanager
    def covered(self) -> Iterator[None]:
        """A region whose torch calls a rule has taken care of (no functional rules, no reports)."""
        stack = self._state().stack
        stack.append((None, False))
        try:
            yield
        finally:
            stack.pop()

    def functional_active(self) -> bool:
        """True while the innermost running module has no rule of its own (its ops are ours)."""
        stack = self._state().stack
        return bool(stack) and stack[-1][1]

    def record_uncovered(self, operation: str) -> tuple[str, str, str] | None:
        """Note an operation on input-dependent tensors that no rule covers (functional mode); its
        coverage key when it is new."""
        stack = self._state().stack
        call = next((entry[0] for entry in reversed(stack) if entry[0] is not None), None)
        return self.coverage.record(operation, call.name if call else "", type(call.module).__name__ if call else "")

    def record_softmax(
        self,
        output: Any,
        logits: torch.Tensor,
        uncovered: tuple[str, str, str] | None,
        ledger_key: tuple[str, str] | None = None,
    ) -> None:
        """Remember the latest softmax of this forward (functional mode): its output, its input and
        its coverage key if it recorded one. Only the latest is kept: an output softmax is the
        forward's last, and one input tensor is all it holds on to."""
        self._state().softmax = (output, logits, uncovered, ledger_key)

    def output_logits(self, output: Any) -> torch.Tensor | None:
        """The logits when ``output`` (the explained tensor of the latest forward) is the output of
        the forward's latest softmax, else None; forgets the softmax either way.

        Relevance of a probability is rarely what a user wants: with the softmax held constant it is
        zero, with its gradient it mixes every class. The logits are explained instead, said once
        per scope, and the softmax, now off the explained path, is not reported as uncovered."""
        state = self._state()
        record, state.softmax = state.softmax, None
        if record is None or record[0] is not output:
            return None
        _, logits, uncovered, ledger_key = record
        if uncovered is not None:
            self.coverage.discard(uncovered)
        if ledger_key is not None and self.ledger is not None:
            self.ledger.discard(ledger_key)  # off the explained path: its input tap sees the seed
        if not self._softmax_warned:
            self._softmax_warned = True
            warnings.warn(
                "the model's output is a softmax; explaining its input, the logits (relevance of a "
                "probability held constant would be zero)",
                stacklevel=6,
            )  # explain's caller
        return logits

    # -- what callers use ---------------------------------------------------------------------
    def track(self, *inputs: torch.Tensor, batch_size: int | None = None) -> tuple[torch.Tensor, ...]:
        """Register the model inputs of the next forward; returns leaves that require grad
        (see :class:`~lrp_domains.core.engine.tracking.InputTracker`)."""
        self._state().softmax = None
        return tuple(self.inputs.track(inputs, batch_size))

    @property
    def uncovered(self) -> list[str]:
        """Operations without a rule seen so far, as ``"softmax in 'attn' (Attention)"``."""
        return self.coverage.uncovered

    def check(self, strict: bool) -> None:
        """Raise (strict) or warn about operations without a rule seen in this scope."""
        self.coverage.check(strict)
