"""A direct path for the commonest small model: an ``nn.Sequential`` of plain ``Linear`` layers,
ReLUs and shape-only modules (an MLP), with any composite whose rules say how to evaluate
themselves directly: epsilon, LRP-0, layer rules (z+, gamma, alpha-beta, z-box...) on the linear
layers (:attr:`Rule.affine_backward <lrp_domains.core.rules.Rule>`), rules that keep the gradient
on the ReLUs and shape-only modules (:meth:`Rule.passes_gradient <lrp_domains.core.rules.Rule>`).

For such a model the engine's per-module machinery (per-instance forwards, the functional rules'
``TorchFunctionMode``, autograd Functions per layer) is pure overhead: the same rules are evaluated
here layer by layer, forward then backward, by the same rule code (``rule.affine_backward`` on the
same ``_Layer`` a scope would build), without autograd. Results equal the general path's (tested);
the model is only read. Anything else (hooks on a module, a patched ``forward``, subclasses,
BatchNorm, other modules, rules without a direct form, sources, a custom ``output``) goes through
the general engine.

Inside the general engine, an MLP block elsewhere in a model (a dense head, ``self.net`` inside a
module) gets the same treatment as one autograd node (:func:`block_plan`, :func:`fused_block`,
used by :meth:`Scope._fused <lrp_domains.core.engine.scope.Scope>`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as torch_module

from lrp_domains.core.composite import Composite
from lrp_domains.core.engine.ledger import LedgerRows, _wide, unintercepted
from lrp_domains.core.engine.result import Explanation
from lrp_domains.core.engine.targets import select_target
from lrp_domains.core.layers import AffineOps, affine_ops
from lrp_domains.core.rules import LayerRule, Rule, _Layer

__all__ = ["HeldPlan", "SequentialPlan", "block_plan", "fused_block", "held_plan_for", "plan_for"]

_SHAPE_ONLY = (nn.Dropout, nn.Identity, nn.Flatten)


@dataclass
class _Step:
    kind: str  # "linear", "relu", "flatten", "identity"
    module: nn.Module
    rule: Rule | None = None
    ops: AffineOps | None = None


def _hooked(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or getattr(module, "_backward_pre_hooks", None)
        or "forward" in module.__dict__
    )


_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def _global_hooks() -> bool:
    return any(getattr(torch_module, name, None) for name in _GLOBAL_HOOKS)


#: Per Sequential, the last plan made for it: what it was made from, and the plan (or None).
_PLANS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, SequentialPlan | None]] = weakref.WeakKeyDictionary()


def _made_from(model: nn.Sequential, composite: Composite) -> tuple:
    """What :func:`plan_for` reads: the composite (its rules, first and last by identity), each
    module and whether it has hooks or a patched forward (names and types follow from identity)."""
    rules = [(key, id(rule)) for key, rule in composite.rules.items()]
    canonizers = [id(c) for c in composite.canonizers]
    modules = [(id(module), _hooked(module), bool(module._modules)) for module in model._modules.values()]
    return (id(composite), rules, id(composite.first), id(composite.last), canonizers, modules)


def plan_for(model: nn.Module, composite: Composite) -> SequentialPlan | None:
    """A plan when ``model`` is such an MLP for ``composite`` (module docstring), else None; kept
    per model while the composite and the modules are the same (one example at a time, making it
    was a tenth of a call)."""
    if type(model) is not nn.Sequential or _hooked(model) or _global_hooks() or len(model) == 0:
        return None
    made_from = _made_from(model, composite)
    kept = _PLANS.get(model)
    if kept is not None and kept[0] == made_from:
        return kept[1]
    plan = _plan(model, composite)
    _PLANS[model] = (made_from, plan)
    return plan


@dataclass
class HeldPlan:
    """The plan of an MLP held by a module whose forward hands its input to it and returns its
    output (``self.net = nn.Sequential(...)``; ``return self.net(x)``), the shape most users write.

    Whether the forward does that is checked on every call, not assumed: the module's own forward
    runs with the block's forward replaced by the plan's for the call (an instance attribute,
    removed after it, also after an error), and the call counts only when the block ran once, on
    the very tensor given to the model, and the model returned the very tensor the block made, both
    unmodified (version counters). Anything else (the input reshaped or scaled first, the output
    changed, other layers on the path, a branch) gives None, and the batch goes to the general
    engine. Then the graph from input to output is the block's, and the relevance is the one the
    general engine gives (tested)."""

    block: nn.Sequential
    plan: SequentialPlan
    #: Set when a call did something else: the model goes to the general engine from then on
    #: (no second forward per call for a model whose forward reshapes its input, say).
    refused: bool = False

    def explain_batch(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor | Callable | None,
        hypothetical: bool = False,
        ledger: bool = False,
    ) -> Explanation | None:
        """One batch as :meth:`SequentialPlan.explain_batch` gives it, or None when the model's
        forward did not only apply the block to ``x`` (run it in eval mode)."""
        seen: list[tuple[torch.Tensor, torch.Tensor, list, int]] = []
        plan = self.plan

        def forward(h: torch.Tensor) -> torch.Tensor:
            output, saved = plan.forward(h)
            seen.append((h, output, saved, output._version))
            return output

        block, version = self.block, x._version
        previous = block.__dict__.get("forward", _MISSING)
        block.__dict__["forward"] = forward
        try:
            with torch.no_grad():
                result = model(x)
        finally:
            if previous is _MISSING:
                block.__dict__.pop("forward", None)
            else:
                block.__dict__["forward"] = previous
        only_the_block = len(seen) == 1 and x._version == version
        if only_the_block:
            given, output, saved, made = seen[0]
            only_the_block = given is x and result is output and output._version == made
        if not only_the_block:
            self.refused = True
            return None
        return plan.explain_forward(x, output, saved, target, hypothetical, ledger)


_MISSING = object()

#: Per module, the last held plan made for it: what it was made from, and the plan (or None).
_HELD: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, HeldPlan | None]] = weakref.WeakKeyDictionary()


def held_plan_for(model: nn.Module, composite: Composite) -> HeldPlan | None:
    """A :class:`HeldPlan` when ``model`` (not a Sequential itself) has one ``nn.Sequential`` child
    that is such an MLP for ``composite`` with the names it has in ``model``, and nothing the
    general engine would do differently: no rule for the model or the block themselves, no hooks,
    and the composite's ``last`` rule (if any) falls on the block's last Linear. Kept per model
    while its children and the composite are the same. Whether a call only applies the block is
    checked per call (:meth:`HeldPlan.explain_batch`)."""
    if type(model) is nn.Sequential or _hooked(model) or _global_hooks():
        return None
    children = [(name, child) for name, child in model._modules.items() if child is not None]
    blocks = [(name, child) for name, child in children if type(child) is nn.Sequential]
    if len(blocks) != 1:
        return None
    name, block = blocks[0]
    made_from = ([(n, id(c), _hooked(c)) for n, c in children], _made_from(block, composite))
    kept = _HELD.get(model)
    if kept is not None and kept[0] == made_from:
        return None if kept[1] is None or kept[1].refused else kept[1]
    held = _held(model, name, block, composite)
    _HELD[model] = (made_from, held)
    return held


def _held(model: nn.Module, name: str, block: nn.Sequential, composite: Composite) -> HeldPlan | None:
    if _hooked(block) or len(block) == 0:
        return None
    if composite.rule_for("", model) is not None or composite.rule_for(name, block) is not None:
        return None  # a rule for the whole module or the whole block: the general engine applies it
    plan = _plan(block, composite, prefix=f"{name}.")
    if plan is None:
        return None
    if composite.last is not None:  # the general engine gives it to the model's last affine layer
        layers = [m for m in model.modules() if affine_ops(m) is not None]
        if layers[-1] is not [step.module for step in plan.steps if step.kind == "linear"][-1]:
            return None
    return HeldPlan(block, plan)


def _plan(model: nn.Sequential, composite: Composite, prefix: str = "") -> SequentialPlan | None:
    """The plan of ``model`` whose modules are called ``prefix + index`` in the explained model."""
    if any(type(c).__name__ != "MergeBatchNorm" for c in composite.canonizers):
        return None
    linears = [m for m in model if type(m) is nn.Linear]
    if not linears:
        return None
    steps: list[_Step] = []
    for index, module in enumerate(model):
        if _hooked(module) or bool(module._modules):
            return None
        name = f"{prefix}{index}"
        if type(module) is nn.Linear:
            rule: Rule | None
            if module is linears[0] and composite.first is not None:
                rule = composite.first
            elif module is linears[-1] and composite.last is not None:
                rule = composite.last
            else:
                rule = composite.rule_for(name, module)
            if rule is None:
                return None  # no module rule: the general engine applies the functional rule for F.linear
            if getattr(rule, "affine_backward", None) is None:
                return None  # the rule has no direct form: the general engine runs its __call__
            if rule.writes_relevance and (module is not linears[0] or steps):
                return None  # an input-layer rule not on the model's input: the general engine handles it
            steps.append(_Step("linear", module, rule, affine_ops(module)))
        elif type(module) is nn.ReLU:
            if not _passes_gradient(composite.rule_for(name, module), module):
                return None
            steps.append(_Step("relu", module))
        elif type(module) is nn.Flatten:
            if not _passes_gradient(composite.rule_for(name, module), module):
                return None
            steps.append(_Step("flatten", module))
        elif type(module) in _SHAPE_ONLY:
            if not _passes_gradient(composite.rule_for(name, module), module):
                return None
            steps.append(_Step("identity", module))
        elif type(module) is nn.Softmax:
            return None  # an output softmax: the engine explains its logits (Scope.output_logits) and says so
        else:
            return None
    if steps[0].kind != "linear" and composite.first is not None:
        return None  # the first rule needs the input layer to come first
    return SequentialPlan(steps, prefix)


def _passes_gradient(rule: Rule | None, module: nn.Module) -> bool:
    return isinstance(rule, Rule) and rule.passes_gradient(module)


@dataclass
class SequentialPlan:
    """The steps of one MLP and how each passes relevance back."""

    steps: list[_Step]
    #: The block's name and a dot in the explained model ("" for the model itself): ledger rows.
    prefix: str = ""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        """The block's output for ``x`` and what its backward keeps (no autograd)."""
        saved: list = []
        with torch.no_grad():
            h = x
            for step in self.steps:
                if step.kind == "linear":
                    z = F.linear(h, *_linear_parameters(step.module))
                    saved.append((h, z))
                    h = z
                elif step.kind == "relu":
                    h = torch.relu(h)
                    saved.append(h)  # its output: > 0 exactly where its input is, and what epsilon needs
                elif step.kind == "flatten":
                    saved.append(tuple(h.shape))
                    h = step.module(h)
                else:
                    saved.append(None)
        return h, saved

    def backward(self, saved: list, grad: torch.Tensor) -> torch.Tensor:
        """The modified gradient at the block's input, from ``grad`` at its output (no layer of a
        block writes relevance directly: :func:`block_plan`)."""
        rectified = None  # a ReLU's output, for the layer right below it (see _Layer.rectified)
        with torch.no_grad():
            for position in range(len(self.steps) - 1, -1, -1):
                step, kept = self.steps[position], saved[position]
                saved[position] = None
                if step.kind == "relu":
                    grad = torch.ops.aten.threshold_backward(grad, kept, 0.0)
                    rectified = kept
                    continue
                if step.kind == "flatten":
                    grad = grad.reshape(kept)
                elif step.kind == "linear":
                    h, z = kept
                    result, _, _ = _linear_backward(step, h, z, grad, False, rectified)
                    assert result is not None  # block_plan admits no rule that writes relevance
                    grad = result
                rectified = None
        return grad

    def explain_batch(
        self,
        x: torch.Tensor,
        target: torch.Tensor | Callable | None,
        hypothetical: bool = False,
        ledger: bool = False,
    ) -> Explanation:
        """One batch, as :func:`lrp_domains.core.engine.attribution.explain_batches` would give it
        (``ledger``: with the rows a scope's taps would record, :mod:`~lrp_domains.core.engine.ledger`)."""
        # per step: (input, z) for linear layers, the output of a ReLU, the shape before a flatten
        output, saved = self.forward(x)
        return self.explain_forward(x, output, saved, target, hypothetical, ledger)

    def explain_forward(
        self,
        x: torch.Tensor,
        output: torch.Tensor,
        saved: list,
        target: torch.Tensor | Callable | None,
        hypothetical: bool = False,
        ledger: bool = False,
    ) -> Explanation:
        """:meth:`explain_batch` from a forward already made (``output, saved = self.forward(x)``)."""
        grad: torch.Tensor | None  # None below a layer that writes its input relevance directly
        explained, index, grad = _seed(output, target)
        written = None
        units = None
        rows: list[tuple[str, str, torch.Tensor]] = []
        entering: torch.Tensor | None = None  # per example, the relevance entering a layer's output
        rectified = None  # a ReLU's output, for the layer right below it (see _Layer.rectified)
        with torch.no_grad():
            for position in range(len(self.steps) - 1, -1, -1):
                step, kept = self.steps[position], saved[position]
                saved[position] = None  # freed as the backward passes it, as autograd frees its buffers
                if step.kind == "relu":  # ReLU's own gradient (its rule passes it)
                    grad = torch.ops.aten.threshold_backward(grad, kept, 0.0)
                    rectified = kept
                    continue
                if step.kind == "flatten":
                    assert grad is not None  # a Flatten below a layer that writes relevance: not supported here
                    grad = grad.reshape(kept)
                elif step.kind == "linear":
                    assert grad is not None  # only the first Linear writes relevance directly (plan_for)
                    h, z = kept
                    if ledger and entering is None:  # the top layer
                        entering = _per_example(z, grad)
                    grad, written, units = _linear_backward(step, h, z, grad, position == 0 and hypothetical, rectified)
                    if ledger:
                        assert entering is not None
                        rows.append((f"{self.prefix}{position}", repr(step.rule), entering))
                        if any(below.kind == "linear" for below in self.steps[:position]):
                            # ReLU, Flatten and identity steps pass sum(h * grad) on unchanged: what leaves
                            # this layer enters the next one down (the lowest one's: the input relevance)
                            assert grad is not None  # only the lowest layer writes relevance (plan_for)
                            leaving = _per_example(h, grad)
                            rows[-1] = (f"{self.prefix}{position}", repr(step.rule), entering - leaving)
                            entering = leaving
                rectified = None
        relevance = x * grad if grad is not None else torch.zeros_like(x)
        if written is not None:
            relevance = relevance + written.reshape(x.shape)
        hypo = None
        if hypothetical:
            hypo = grad.clone() if grad is not None else torch.zeros_like(x)
            if units is not None:
                hypo = hypo + units.reshape(x.shape).to(hypo.dtype)
        result = Explanation.build(relevance, output, index, explained, hypo, {})  # made under no_grad
        if ledger:
            # the lowest layer lets out the input relevance: explained - delta, summed once already
            name, rule, entering = rows[-1]
            rows[-1] = (name, rule, entering - (_wide(explained) - _wide(result.delta)))
            n = x.shape[0]
            # one conversion for all rows (per row it is what a small layer's time is made of)
            absorbed = (
                torch.stack([row[2] for row in rows]).double().cpu() if rows else torch.zeros(0, n, dtype=torch.float64)
            )
            numerical = result.delta.detach().double().cpu() - absorbed.sum(0)
            result.ledger_rows = LedgerRows([r[0] for r in rows], [r[1] for r in rows], absorbed, numerical)
        return result


#: The module types an MLP block is made of (:func:`block_plan`).
BLOCK_TYPES = frozenset({nn.Linear, nn.ReLU, nn.Flatten, *_SHAPE_ONLY})


def block_plan(block: nn.Sequential, rule_of: Callable[[nn.Module], Rule | None]) -> SequentialPlan | None:
    """A plan for an MLP block inside a bigger model, with the rules a scope gave its modules
    (``rule_of``), for :func:`fused_block`; None where the block is not such an MLP: other modules,
    hooks, a module in training mode, a rule without a direct form or one that writes relevance
    directly (an input-layer rule: the scope applies it)."""
    steps: list[_Step] = []
    for module in block:
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module.training:
            return None
        if getattr(module, "_backward_pre_hooks", None) or bool(module._modules):
            return None
        rule = rule_of(module)
        if type(module) is nn.Linear:
            if rule is None or getattr(rule, "affine_backward", None) is None or rule.writes_relevance:
                return None
            steps.append(_Step("linear", module, rule, affine_ops(module)))
        elif type(module) is nn.ReLU and _passes_gradient(rule, module):
            steps.append(_Step("relu", module))
        elif type(module) is nn.Flatten and _passes_gradient(rule, module):
            steps.append(_Step("flatten", module))
        elif type(module) in _SHAPE_ONLY and _passes_gradient(rule, module):
            steps.append(_Step("identity", module))
        else:
            return None
    if not any(step.kind == "linear" for step in steps):
        return None
    return SequentialPlan(steps)


class _FusedBlock(torch.autograd.Function):
    """An MLP block as one autograd node: the plan's forward, and in the backward its rules layer by
    layer (the scope's own rules, without a forward, a mode dispatch or an autograd Function per
    module)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, plan: SequentialPlan) -> torch.Tensor:  # noqa: D102
        with unintercepted():  # the plan's own arithmetic: no functional rules apply inside the block
            output, saved = plan.forward(x)
        ctx.plan, ctx.saved = plan, saved
        return output

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        saved, ctx.saved = ctx.saved, None  # freed as autograd frees its buffers
        return ctx.plan.backward(saved, grad), None


def fused_block(x: torch.Tensor, plan: SequentialPlan) -> torch.Tensor:
    """``plan``'s block applied to ``x`` as one autograd node (see :class:`_FusedBlock`)."""
    return _FusedBlock.apply(x, plan)


def _linear_parameters(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A plain ``nn.Linear``'s weight and bias as it holds them (read from its parameter dict:
    ``module.weight`` goes through ``nn.Module.__getattr__``, a tenth of a small layer's step)."""
    parameters = module._parameters
    weight = parameters["weight"]
    assert weight is not None  # a plan takes plain nn.Linear layers only (plan_for, block_plan)
    return weight, parameters.get("bias")


def _per_example(value: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Per example, ``sum(value * grad)``, in the tensors' dtype (half types in float32)."""
    n = value.shape[0]
    # a batched matrix-vector product: the BLAS kernel wakes fewer threads than a product and a
    # sum (2-5x faster for a small layer under OMP_WAIT_POLICY=PASSIVE, measured)
    return torch.bmm(_wide(value).reshape(n, 1, -1), _wide(grad).reshape(n, -1, 1)).reshape(n)


def _seed(
    output: torch.Tensor, target: torch.Tensor | Callable | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The explained values, their indices, and d(explained)/d(output) (the relevance seed)."""
    if callable(target):
        leaf = output.detach().requires_grad_(True)
        with torch.enable_grad():
            explained, index = select_target(leaf, target)
            (grad,) = torch.autograd.grad(explained.sum(), leaf, allow_unused=True)
        return explained.detach(), index, grad if grad is not None else torch.zeros_like(output)
    explained, index = select_target(output, target)
    assert index is not None  # every target but a callable has an index
    grad = torch.zeros_like(output).reshape(output.shape[0], -1)
    grad.scatter_(1, index[:, None], 1.0)
    return explained, index, grad.reshape(output.shape)


def _linear_backward(
    step: _Step,
    x: torch.Tensor,
    z: torch.Tensor,
    grad: torch.Tensor,
    record: bool,
    rectified: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(gradient at the input, relevance written directly, hypothetical units)`` of one layer
    (``rectified``: the output of the ReLU right above it, whose backward ``grad`` went through)."""
    # the parameters as they are: every caller runs this under no_grad (nothing to detach from)
    rule, (weight, bias) = step.rule, _linear_parameters(step.module)
    assert rule is not None  # plan_for sends layers without a rule to the general engine
    assert step.ops is not None  # a Linear's
    layer = _Layer(step.ops, x, z, weight, bias, grad)
    layer.rectified = rectified
    result = rule.affine_backward(layer)
    if rule.writes_relevance:
        units = None
        if record:
            assert isinstance(rule, LayerRule)  # what writes relevance directly: a layer rule
            units = rule.unit_relevance(layer, result)
        return None, result, units
    return result, None, None
