"""LRP rules, each a small object that decides how relevance passes back through one module call.

Notation (Montavon et al. 2019, "Layer-wise relevance propagation: an overview"): a layer computes
``z = W x + b``; ``R`` is the relevance arriving at ``z`` (``R = z * g`` for the modified gradient
``g``); ``stab(z) = z + eps * sign(z)`` with ``sign(0) = +1``; ``x+ / x-``, ``W+ / W-``,
``b+ / b-`` are the parts clamped at zero. Each rule is written so that the relevance of the
layer input is ``x * g_in`` (rules of that form), or is written directly (``ZBox``, ``WSquare``,
``Flat``: they give relevance to zero-valued inputs too, which ``x * g`` cannot express).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Union, overload

import torch
from torch import nn

from lrp_domains.core.derived import derived
from lrp_domains.core.gradients import (
    epsilon_grad,
    epsilon_scale,
    epsilon_scale_rectified,
    identity_rule,
    scale_grad,
)
from lrp_domains.core.layers import AffineOps
from lrp_domains.core.stabilize import safe_divide, stabilize, stabilize_signed

if TYPE_CHECKING:
    from lrp_domains.core.engine.scope import ModuleCall

__all__ = [
    "AlphaBeta",
    "Epsilon",
    "Flat",
    "Gamma",
    "Identity",
    "LayerRule",
    "Pass",
    "Rule",
    "Stop",
    "Uniform",
    "WSquare",
    "ZBox",
    "ZPlus",
]


#: A rule's cost: one number, or ``(input >= 0, input of both signs)``; None: not declared.
Cost = Union[int, tuple[int, int], None]


class Rule:
    """Base class: ``rule(call, args, kwargs)`` runs the module's forward with the rule attached.

    What a rule declares about its own formula, asked by whoever needs it (never read off its class):

    - :attr:`cost` (read through :meth:`macs`): multiply-accumulates of the module's forward and
      the rule's backward together, in units of the module's forward ``F``. The plain gradient is
      2 (the forward and one transposed product); a rule that runs one more layer forward adds 1.
      ``lrp_domains.bench.flops`` sums it over a model's affine layers.
    - :attr:`affine_backward`: the rule's backward through an affine layer evaluated directly, on a
      ``_Layer`` (see :class:`LayerRule`), or None where the rule has no such form; the direct MLP
      path (``core/engine/sequential.py``) runs rules that have one, the general engine all others.
    - :meth:`passes_gradient`: whether the rule keeps a module's own gradient (so the direct path
      may use that gradient).
    - :attr:`writes_relevance`: whether the rule gives zero-valued inputs relevance (input layers).
    - :attr:`preserves_relevance`: whether ``R_in = R_out`` by construction wherever the input is
      not zero (identity-type rules); the conservation ledger does not tap such a module when it
      maps zero to zero (it then absorbs nothing).

    These belong to the formula: a subclass that writes another ``__call__`` (or, for a layer
    rule, another ``backward``) does not inherit its parent's cost, and one that writes another
    ``__call__`` does not inherit its direct backward or ``passes_gradient`` (it takes the general
    engine), unless it declares its own.
    """

    #: Multiply-accumulates of forward and backward in units of the module's forward (see above).
    cost: ClassVar[Cost] = None
    #: ``affine_backward(layer)``: the modified input gradient (or, when :attr:`writes_relevance`,
    #: the input relevance) through an affine layer, exactly as ``__call__`` gives it; None: none.
    affine_backward: ClassVar[Any] = None
    #: Whether the rule gives zero-valued inputs relevance, written directly (input-layer rules).
    writes_relevance: ClassVar[bool] = False
    #: Whether ``R_in = R_out`` by construction wherever the input is not zero (see above).
    preserves_relevance: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if ("__call__" in own or "backward" in own) and "cost" not in own:
            cls.cost = None
        if "__call__" in own:
            # Rule's own: no direct form, no gradient, no promise about relevance
            for name in ("affine_backward", "passes_gradient", "preserves_relevance", "ledger_bias"):
                if name not in own:
                    setattr(cls, name, vars(Rule)[name])

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError

    def ledger_bias(self, call: ModuleCall) -> torch.Tensor | None:
        """For the conservation ledger: the constant ``b`` the module adds to an output that is
        otherwise linear in its input, when this rule keeps the module's plain gradient (LRP-0).
        Then what it absorbs is ``sum(b * g)`` over the output gradient ``g`` alone (``z g - x W^T g
        = b g``): no tensor needs keeping. None: not such a rule (the ledger taps inputs and output);
        an empty tensor: no bias (nothing absorbed). Its channels run along the output's last
        dimension for ``nn.Linear`` and ``nn.LayerNorm``, along dimension 1 for other modules."""
        return None

    def macs(self, nonnegative: bool) -> int:
        """This rule's :attr:`cost` on a layer whose input is non-negative (``nonnegative``) or of
        both signs; a TypeError naming the rule when it declares none."""
        cost = self.cost
        if cost is None:
            raise TypeError(
                f"{type(self).__qualname__} declares no cost: give the class a cost attribute (multiply-"
                "accumulates of forward and backward in units of the layer's forward: 2 for a gradient's, "
                "or a pair (input >= 0, input of both signs))"
            )
        if isinstance(cost, tuple):
            return int(cost[0] if nonnegative else cost[1])
        return int(cost)

    def passes_gradient(self, module: nn.Module) -> bool:
        """Whether the rule's backward through ``module`` is the module's own gradient."""
        return False

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def single_input(call: ModuleCall, args: tuple, kwargs: dict) -> torch.Tensor:
    """The one tensor input of a layer rule, or a clear error for modules called otherwise."""
    if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
        raise TypeError(
            f"{call.describe()} is called with {len(args)} positional and {len(kwargs)} keyword "
            "arguments, but its rule takes modules with a single tensor input; give this module "
            "another rule in the composite (by name or type)."
        )
    return args[0]


class Pass(Rule):
    """Keep the module's own gradient.

    Right for modules whose gradient already carries relevance unchanged: reshapes, ``Flatten``,
    ``Dropout`` in eval mode, ``ReLU``/``LeakyReLU`` (their gradient ``f'(x)`` equals the
    identity rule's ``f(x)/x``), max-pooling (relevance to the winners), ``Identity``.
    """

    cost = 2  # the forward and the module's own backward: the gradient

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        return call.original(*args, **kwargs)

    def affine_backward(self, layer: _Layer) -> torch.Tensor:
        """The plain gradient: ``W^T g``."""
        return layer.vjp(layer.weight, layer.grad)

    def passes_gradient(self, module: nn.Module) -> bool:
        """Always: the rule is the module's own gradient."""
        return True


class Identity(Rule):
    """Identity rule for elementwise activations: ``R_in = R_out``.

    Montavon et al. 2019, Sec. 10.2.1; AttnLRP (Achtibat et al. 2024), Sec. 3.3.1, for GELU, SiLU
    and the like: the modified gradient is ``f(x) / x`` instead of ``f'(x)``.
    """

    cost = 2  # the forward (and the ratio f(x) / x), an elementwise product in the backward
    preserves_relevance = True  # g_x = g_y f(x) / x: x g_x = f(x) g_y wherever x != 0

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        x = single_input(call, args, kwargs)
        return identity_rule(x, call.original)

    def passes_gradient(self, module: nn.Module) -> bool:
        """For a ReLU: ``relu(x) / x`` is its gradient (1 above zero, 0 elsewhere)."""
        return type(module) is nn.ReLU


class Stop(Rule):
    """Stop rule: the output passes forward, no relevance passes back through this module.

    CP-LRP (Ali et al. 2022, "XAI for Transformers: better explanations through conservative
    propagation", Sec. 3) detaches the attention probabilities this way.
    """

    cost = 1  # the forward only: nothing passes back

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        return call.original(*args, **kwargs).detach()


class Uniform(Rule):
    """Uniform rule for a product of ``k`` input-dependent tensors: each receives ``1/k``.

    AttnLRP (Achtibat et al. 2024), Prop. 3.3, for ``Q K^T``, ``A V`` and gated products
    ``act(gate) * up``: the gradient into each input-dependent operand is scaled by ``1/k``.
    """

    cost = 2  # the forward and the module's own backward, scaled (elementwise)

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        dependent = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
        if len(dependent) > 1:
            args = tuple(scale_grad(a, 1.0 / len(dependent)) if i in dependent else a for i, a in enumerate(args))
        return call.original(*args, **kwargs)


class Epsilon(Rule):
    """LRP-epsilon: ``R_in = x * W^T (R / stab(z))`` (Bach et al. 2015, Eq. 58).

    Applies to any module that is affine in its input (Linear, Conv, average pooling, an unmerged
    BatchNorm): the module's own backward is used with the output gradient scaled by
    ``z / stab(z)``, so it costs what a gradient costs. ``epsilon=0`` is LRP-0 (Bach et al. 2015,
    Eq. 56): the plain gradient, with no extra operation.
    """

    cost = 2  # the forward and the module's own backward, with an elementwise scale: a gradient's

    def __init__(self, epsilon: float = 1e-6) -> None:
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        self.epsilon = float(epsilon)

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        if call.merged:
            z = call.compute(single_input(call, args, kwargs))
        else:
            z = call.original(*args, **kwargs)
        if self.epsilon == 0:
            return z  # LRP-0, whose modified gradient is the plain gradient
        for a in args:
            if z is a:  # a module handing back its input: the hook goes on this path's own node
                z = z.view_as(z)
                break
        return epsilon_grad(z, self.epsilon)

    def ledger_bias(self, call: ModuleCall) -> torch.Tensor | None:
        """LRP-0 on a Linear or convolution: its (merged) bias (see :meth:`Rule.ledger_bias`)."""
        if self.epsilon > 0 or call.ops is None:
            return None
        _, bias = call.params()
        return torch.zeros(0) if bias is None else bias

    def affine_backward(self, layer: _Layer) -> torch.Tensor:
        """``W^T (g z / stab(z))``, the scale of :func:`~lrp_domains.core.gradients.epsilon_grad`."""
        if self.epsilon == 0:
            grad = layer.grad
        elif layer.rectified is not None:
            grad = epsilon_scale_rectified(layer.grad, layer.rectified, self.epsilon)
        else:
            grad = epsilon_scale(layer.grad, layer.z, self.epsilon)
        return layer.vjp(layer.weight, grad)


@overload
def _pos(t: torch.Tensor) -> torch.Tensor: ...
@overload
def _pos(t: torch.Tensor | None) -> torch.Tensor | None: ...
def _pos(t: torch.Tensor | None) -> torch.Tensor | None:
    """``max(t, 0)`` of a parameter (kept between calls: :mod:`lrp_domains.core.derived`)."""
    return None if t is None else derived("pos", (t,), lambda: t.clamp(min=0))


@overload
def _neg(t: torch.Tensor) -> torch.Tensor: ...
@overload
def _neg(t: torch.Tensor | None) -> torch.Tensor | None: ...
def _neg(t: torch.Tensor | None) -> torch.Tensor | None:
    """``min(t, 0)`` of a parameter (kept between calls: :mod:`lrp_domains.core.derived`)."""
    return None if t is None else derived("neg", (t,), lambda: t.clamp(max=0))


def _bound(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A ZBox bound broadcast to one example of ``x`` (or to the batch when given per example)."""
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if v.dim() == x.dim() and v.shape[0] == x.shape[0] and x.shape[0] > 1:
        return v.expand_as(x).contiguous()
    return torch.broadcast_to(v, (1,) + x.shape[1:]).contiguous()


class _Layer:
    """What a layer rule's backward sees: the functional layer, its input, output, parameters,
    and the gradient ``g`` arriving at the output (so the relevance there is ``z * g``)."""

    def __init__(
        self,
        ops: AffineOps,
        x: torch.Tensor,
        z: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        grad: torch.Tensor,
    ) -> None:
        self.ops, self.x, self.z, self.weight, self.bias, self.grad = ops, x, z, weight, bias, grad
        #: What a rule's backward keeps for :meth:`LayerRule.unit_relevance`.
        self.cache: Any = None
        #: ``max(z, 0)`` where the output goes through a ReLU whose backward already zeroed ``grad``
        #: wherever ``z <= 0`` (the direct MLP path sets it); None otherwise.
        self.rectified: torch.Tensor | None = None
        #: What the rule's :meth:`~LayerRule.forward_flag` computed in the forward (whether ``x >= 0``
        #: everywhere, or inside z-box's bounds); None: the backward asks ``x`` itself.
        self.flag: HostFlag | None = None

    def relevance(self) -> torch.Tensor:
        """``R = z * g``, a fresh tensor the rule may modify in place."""
        return self.z * self.grad

    def f(self, v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return self.ops.forward(v, weight, bias)

    def vjp(self, weight: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.ops.vjp(self.x, weight, s)

    def bias_map(self, bias: torch.Tensor | None) -> torch.Tensor | float:
        """The bias as the layer adds it to the output, shaped to broadcast over the batch."""
        if bias is None:
            return 0.0
        probe = torch.zeros((1,) + self.x.shape[1:], dtype=self.x.dtype, device=self.x.device)
        return self.f(probe, torch.zeros_like(self.weight), bias)

    def nonnegative(self) -> bool:
        """Whether the layer's input is ``>= 0`` everywhere (the flag made in the forward, if any)."""
        if self.flag is not None:
            return bool(self.flag)
        return bool(self.x.min() >= 0)

    def bound(self, value: float | torch.Tensor) -> torch.Tensor:
        """A ZBox bound broadcast to one example (or to the batch when given per example)."""
        return _bound(value, self.x)


class LayerRule(Rule):
    """A rule that needs the layer's weights: evaluated in one custom backward per layer call.

    Subclasses implement ``backward(layer)``, returning the modified input gradient, or the
    input relevance when ``writes_relevance`` is True. The layer's forward runs once, unchanged;
    the modified forwards a rule needs run in its backward, one layer at a time, so their
    temporaries never pile up across layers.
    """

    #: The backward branches on whether the input is ``>= 0`` (:class:`SignFlag` is made in the forward).
    branches_on_sign: ClassVar[bool] = False

    def backward(self, layer: _Layer) -> torch.Tensor:
        raise NotImplementedError

    def affine_backward(self, layer: _Layer) -> torch.Tensor:
        """:meth:`backward` itself."""
        return self.backward(layer)

    def forward_flag(self, x: torch.Tensor) -> HostFlag | None:
        """What the backward branches on, computed from the layer's input in the forward (it reaches
        the backward as ``layer.flag``): a :class:`SignFlag` for rules that branch on the sign,
        else None."""
        return SignFlag(x) if self.branches_on_sign else None

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        x = single_input(call, args, kwargs)
        if call.ops is None:
            raise TypeError(
                f"{self!r} needs an affine layer (Linear, Conv, ConvTranspose), but "
                f"{call.describe()} is not one; map this module to another rule."
            )
        weight, bias = call.params()
        anchor, record = call.input_layer(x) if self.writes_relevance else (None, None)
        return _LayerRuleFunction.apply(x, anchor, self, call.ops, weight, bias, record)

    def unit_relevance(self, layer: _Layer, relevance: torch.Tensor) -> torch.Tensor:
        """For rules that write relevance: what each input would receive if its value were 1
        (the hypothetical contribution of a one-hot entry). Default: ``relevance`` itself, right
        for rules that ignore the input's value (w-square, flat)."""
        return relevance


class HostFlag:
    """A true/false fact about a layer's input, computed in the forward, where the input is made,
    and read in the backward, where a rule branches on it (:meth:`LayerRule.forward_flag`).

    On a GPU the flag comes to the host by a non-blocking copy with an event recorded after it:
    reading it waits for that forward-time work, long finished by the backward, instead of every
    kernel queued before the read, as ``bool(...)`` of a device tensor in the backward did once per
    layer (a host sync that drains the queue). On a CPU it is that same comparison, made earlier."""

    def __init__(self, flag: torch.Tensor) -> None:
        self.event: Any = None
        if flag.is_cuda:
            self.value = torch.empty((), dtype=torch.bool, pin_memory=True)
            self.value.copy_(flag, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.value = flag

    def __bool__(self) -> bool:
        if self.event is not None:
            self.event.synchronize()
        return bool(self.value)


class _BoxFlag(HostFlag):
    """z-box's flag, with the bounds broadcast to the layer's input, made once for both passes."""

    def __init__(self, flag: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__(flag)
        self.low, self.high = low, high


class SignFlag(HostFlag):
    """Whether a layer's input is ``>= 0`` everywhere (:meth:`_Layer.nonnegative`), as a
    :class:`HostFlag`."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__(x.min() >= 0 if x.numel() else torch.ones((), dtype=torch.bool, device=x.device))


class _LayerRuleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, anchor, rule, ops, weight, bias, record):  # noqa: D102
        z = ops.forward(x, weight, bias)
        ctx.save_for_backward(x, z, weight, bias)
        ctx.rule, ctx.ops, ctx.record = rule, ops, record
        ctx.anchor_shape = None if anchor is None else anchor.shape
        ctx.flag = rule.forward_flag(x)
        return z

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, z, weight, bias = ctx.saved_tensors
        rule = ctx.rule
        with torch.no_grad():
            layer = _Layer(ctx.ops, x, z, weight, bias, grad)
            layer.flag = ctx.flag
            result = rule.backward(layer)
            if ctx.record is not None:
                ctx.record(rule.unit_relevance(layer, result).reshape(ctx.anchor_shape))
        if not rule.writes_relevance:
            return result, None, None, None, None, None, None
        if ctx.anchor_shape is not None:
            return None, result.reshape(ctx.anchor_shape), None, None, None, None, None
        # Not an input layer: express the relevance as x * g; zero-valued inputs lose theirs.
        return safe_divide(result, x), None, None, None, None, None, None


class ZPlus(LayerRule):
    """LRP-z+: ``R_in = x+ * W+^T s + x- * W-^T s``, ``s = R / stab(W+ x+ + W- x- + b+)``.

    Montavon et al. 2017 ("Explaining nonlinear classification decisions with deep Taylor
    decomposition", Eq. 11), with zennit's extension to negative inputs. When ``x >= 0`` (after a
    ReLU) the ``x-`` term vanishes and is skipped: one extra layer forward.
    """

    branches_on_sign = True
    cost = (3, 5)  # + W+ x+ (input >= 0); else W+ x+ and W- x-, W+^T s and W-^T s

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = float(stabilizer)

    def backward(self, layer: _Layer) -> torch.Tensor:
        wp, wn, bp = _pos(layer.weight), _neg(layer.weight), _pos(layer.bias)
        if layer.nonnegative():
            denominator = stabilize_signed(layer.f(layer.x, wp, bp), 1, self.stabilizer)
            return layer.vjp(wp, layer.relevance().div_(denominator))
        xp, xn = layer.x.clamp(min=0), layer.x.clamp(max=0)
        denominator = stabilize_signed(layer.f(xp, wp, bp) + layer.f(xn, wn), 1, self.stabilizer)
        s = layer.relevance().div_(denominator)
        return torch.where(layer.x > 0, layer.vjp(wp, s), layer.vjp(wn, s))


class AlphaBeta(LayerRule):
    """LRP-alpha-beta: ``R_in = alpha * R+ - beta * R-`` (Bach et al. 2015, Eq. 60).

    ``R+ = x+ * W+^T s+ + x- * W-^T s+`` with ``s+ = R / stab(W+ x+ + W- x- + b+)`` and
    ``R- = x+ * W-^T s- + x- * W+^T s-`` with ``s- = R / stab(W- x+ + W+ x- + b-)``. Requires
    ``alpha - beta = 1`` and both ``>= 0``.
    """

    branches_on_sign = True
    cost = (4, 9)  # + W+ x, W+^T s+ and W-^T s- (input >= 0); else four forwards, four products

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> None:
        if alpha < 0 or beta < 0:
            raise ValueError(f"AlphaBeta needs alpha >= 0 and beta >= 0, got alpha={alpha}, beta={beta}")
        if abs((alpha - beta) - 1.0) > 1e-12:
            raise ValueError(f"AlphaBeta needs alpha - beta = 1 to conserve relevance, got {alpha} - {beta}")
        self.alpha, self.beta, self.stabilizer = float(alpha), float(beta), float(stabilizer)

    def backward(self, layer: _Layer) -> torch.Tensor:
        w, b = layer.weight, layer.bias
        wp, wn = _pos(w), _neg(w)
        a, c, eps = self.alpha, self.beta, self.stabilizer
        relevance = layer.relevance()
        if layer.nonnegative():
            # z = (W+ x + b+) + (W- x + b-) for x >= 0: one extra forward gives both parts.
            zp = layer.f(layer.x, wp, _pos(b))
            zn = layer.z - zp
            sp = (relevance * a).div_(stabilize_signed(zp, 1, eps))
            sn = (relevance * -c).div_(stabilize_signed(zn, -1, eps))
            return layer.ops.vjp_sum(layer.x, [(wp, sp), (wn, sn)])
        xp, xn = layer.x.clamp(min=0), layer.x.clamp(max=0)
        sp = relevance / stabilize_signed(layer.f(xp, wp, _pos(b)) + layer.f(xn, wn), 1, eps)
        sn = relevance / stabilize_signed(layer.f(xp, wn, _neg(b)) + layer.f(xn, wp), -1, eps)
        g_pos = a * layer.vjp(wp, sp) - c * layer.vjp(wn, sn)
        g_neg = a * layer.vjp(wn, sp) - c * layer.vjp(wp, sn)
        return torch.where(layer.x > 0, g_pos, g_neg)


def w_up_of(weight: torch.Tensor, gamma: float) -> torch.Tensor:
    """``W + gamma W+`` (kept between calls: :mod:`lrp_domains.core.derived`; ``W+`` is the one
    the rule's forward uses)."""
    return derived(("up", gamma), (weight,), lambda: torch.add(weight, _pos(weight), alpha=gamma))


def w_down_of(weight: torch.Tensor, gamma: float) -> torch.Tensor:
    """``W + gamma W-`` (kept between calls: :mod:`lrp_domains.core.derived`)."""
    return derived(("down", gamma), (weight,), lambda: torch.add(weight, _neg(weight), alpha=gamma))


class Gamma(LayerRule):
    """Generalized LRP-gamma (Montavon et al. 2019, Eq. 7; Andeol et al. 2021), sign-aware.

    Where ``z > 0``: weights ``W + gamma W+`` on ``x+`` and ``W + gamma W-`` on ``x-``, bias
    ``b + gamma b+``; where ``z < 0``: ``W + gamma W-`` on ``x+`` and ``W + gamma W+`` on ``x-``,
    bias ``b + gamma b-``. Each part is normalised by its own stabilized sum. For ``x >= 0`` only
    ``W+ x + b+`` is computed (``W- x + b- = z - W+ x - b+``): one extra layer forward.
    """

    branches_on_sign = True
    cost = (4, 9)  # as AlphaBeta: + W+ x and two products (input >= 0); else four and four

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6) -> None:
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma, self.stabilizer = float(gamma), float(stabilizer)

    def backward(self, layer: _Layer) -> torch.Tensor:
        w, b, z, g, eps = layer.weight, layer.bias, layer.z, self.gamma, self.stabilizer
        positive = z > 0
        w_up, w_down = w_up_of(w, g), w_down_of(w, g)
        if layer.nonnegative():
            # With u = W+ x + b+ >= 0 and z - u = W- x + b- (x >= 0) the denominators are
            # d = z + gamma u > 0 (where z > 0) and d = z + gamma (z - u) < 0 (where z < 0): both
            # have the sign of z, and |d| = |z| + gamma (u + max(-z, 0)) in either case. So
            # R / stab(d) = |z| g / (|d| + eps), which vanishes where z does; the part where z < 0
            # is the whole less the part where z > 0. Ten elementwise passes (thirteen before).
            u = layer.f(layer.x, _pos(w), _pos(b))
            magnitude = torch.abs(z)
            u.sub_(z.clamp(max=0))
            denominator = torch.add(magnitude, u, alpha=g).add_(eps)
            del u
            s = magnitude.mul_(layer.grad).div_(denominator)
            del denominator
            s_up = torch.where(positive, s, 0.0)
            return layer.ops.vjp_sum(layer.x, [(w_up, s_up), (w_down, s.sub_(s_up))])
        negative = z < 0
        relevance = layer.relevance()
        rp, rn = relevance.masked_fill(~positive, 0), relevance.masked_fill_(~negative, 0)
        xp, xn = layer.x.clamp(min=0), layer.x.clamp(max=0)
        zp = layer.f(xp, w_up) + layer.f(xn, w_down) + layer.bias_map(None if b is None else b + g * _pos(b))
        zn = layer.f(xp, w_down) + layer.f(xn, w_up) + layer.bias_map(None if b is None else b + g * _neg(b))
        sp, sn = rp / stabilize(zp, eps), rn / stabilize(zn, eps)
        g_pos = layer.vjp(w_up, sp) + layer.vjp(w_down, sn)
        g_neg = layer.vjp(w_down, sp) + layer.vjp(w_up, sn)
        return torch.where(layer.x > 0, g_pos, g_neg)


class ZBox(LayerRule):
    """LRP-z^B for inputs bounded by ``low <= x <= high`` (Montavon et al. 2017, Eq. 12).

    ``R_in = x * W^T s - low * W+^T s - high * W-^T s``, ``s = R / stab(W x - W+ low - W- high)``.
    An input-layer rule: it gives relevance to zero-valued inputs (one-hot sequences), so it writes
    relevance directly. ``low``/``high`` are floats or tensors broadcast to one example.
    """

    writes_relevance = True
    cost = 3  # W+ low and W- high are one example each (free); W^T s and W+^T s

    def __init__(self, low: float | torch.Tensor, high: float | torch.Tensor, stabilizer: float = 1e-6) -> None:
        self.low, self.high, self.stabilizer = low, high, float(stabilizer)

    def backward(self, layer: _Layer) -> torch.Tensor:
        w, wp, x = layer.weight, _pos(layer.weight), layer.x
        flag = layer.flag
        if isinstance(flag, _BoxFlag):  # the bounds as the forward broadcast them
            low, high = flag.low, flag.high
        else:
            low, high = layer.bound(self.low), layer.bound(self.high)
        # b + W+ low + W- high, with W- high = W high - W+ high: forwards of one example,
        # negligible next to the batch; the bias is folded in so the batch sees one subtraction.
        offset = layer.f(low, wp) + layer.f(high, w, layer.bias) - layer.f(high, wp)
        denominator = torch.sub(layer.z, offset)
        inside = layer.flag if layer.flag is not None else self._inside(x, low, high)
        if bool(inside):
            # Inside the box W x - W+ low - W- high = W+ (x - low) + W- (x - high) >= 0.
            denominator.add_(self.stabilizer)
        else:
            denominator = stabilize(denominator, self.stabilizer)
        s = torch.div(layer.z, denominator, out=denominator).mul_(layer.grad)
        # x W^T s - low W+^T s - high (W^T s - W+^T s): two transposed products, one call.
        plain, positive = layer.ops.vjp_each(x, [w, wp], s)
        layer.cache = (plain, positive, high, low)
        return (x - high) * plain + (high - low) * positive

    @staticmethod
    def _inside(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return torch.logical_and(x >= low, x <= high).all()

    def forward_flag(self, x: torch.Tensor) -> HostFlag:
        """Whether ``low <= x <= high`` everywhere: the backward's choice of stabilizer, read off
        the forward (no host sync in the backward on a GPU)."""
        low, high = _bound(self.low, x), _bound(self.high, x)
        return _BoxFlag(self._inside(x, low, high), low, high)

    def unit_relevance(self, layer: _Layer, relevance: torch.Tensor) -> torch.Tensor:
        """``R_in`` at ``x = 1``: ``(1 - high) W^T s + (high - low) W+^T s`` (``W+^T s`` for a
        one-hot box [0, 1]): the hypothetical contribution of each base (first-order: ``s`` as
        computed for the observed sequence)."""
        plain, positive, high, low = layer.cache
        return (1 - high) * plain + (high - low) * positive


class WSquare(LayerRule):
    """LRP-w^2 (Montavon et al. 2017, Eq. 14): ``R_in,i = sum_j W_ji^2 / (sum_i' W_ji'^2 + b_j^2) R_j``.

    Independent of the input values; an input-layer rule that writes relevance directly.
    """

    writes_relevance = True
    cost = 2  # the forward and (W^2)^T s (W^2 1 is one example: free)

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = float(stabilizer)

    def _weights(self, layer: _Layer) -> tuple[torch.Tensor, torch.Tensor | None]:
        return layer.weight**2, None if layer.bias is None else layer.bias**2

    def backward(self, layer: _Layer) -> torch.Tensor:
        w, b = self._weights(layer)
        ones = torch.ones((1,) + layer.x.shape[1:], dtype=layer.x.dtype, device=layer.x.device)
        s = layer.relevance().div_(stabilize(layer.f(ones, w, b), self.stabilizer))
        return layer.vjp(w, s)


class Flat(WSquare):
    """LRP-flat (Lapuschkin et al. 2019, "Unmasking Clever Hans predictors"): ``WSquare`` with
    every weight 1 and no bias: relevance spread evenly over each output's receptive field."""

    def _weights(self, layer: _Layer) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.ones_like(layer.weight), None
