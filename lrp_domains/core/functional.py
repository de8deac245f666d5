"""Rules for torch functions called directly in a model's ``forward`` (``torch.relu(x)``, ``a * b``).

Module rules cannot see functional calls, so while a model runs inside a scope a
``TorchFunctionMode`` (thread-local, active only during that model's forward and only outside
modules that have a rule) looks at each torch function applied to input-dependent tensors:

- elementwise activations (GELU, SiLU, tanh...) get the identity rule;
- products of two or more input-dependent tensors (``*``, ``@``, ``einsum``) the uniform rule;
- functional linear layers (``F.linear``, ``F.conv*``) the epsilon rule;
- operations whose gradient already distributes relevance correctly (reshapes, indexing, sums,
  concatenation, max/average pooling, ReLU) pass unchanged;
- anything else (softmax, exp, normalisation, division by an input-dependent tensor) is
  recorded as *uncovered*: strict mode names it, non-strict mode warns.

The latest softmax of a forward is also remembered (its output and its input, the logits): when
the model's explained output *is* that softmax's output, ``explain`` explains the logits instead
(:meth:`~lrp_domains.core.engine.scope.Scope.output_logits`).

"Input-dependent" means "requires grad": inside a scope the model's parameters do not.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.overrides import TorchFunctionMode

from lrp_domains.core.gradients import epsilon_grad, identity_rule, scale_grad

if TYPE_CHECKING:
    from lrp_domains.core.engine.scope import Scope

IDENTITY_RULE_OPS = frozenset(
    {
        "gelu",
        "silu",
        "tanh",
        "elu",
        "selu",
        "celu",
        "softplus",
        "mish",
        "hardswish",
        # elementwise monotone, f(0) = 0: the identity rule (scvi-tools encoders, lrp_domains.bio.cells.scvi_models)
        "log1p",
    }
)

PRODUCT_OPS = frozenset(
    {
        "mul",
        "__mul__",
        "__rmul__",
        "multiply",
        "matmul",
        "__matmul__",
        "__rmatmul__",
        "bmm",
        "mm",
        "mv",
        "dot",
        "inner",
        "outer",
        "einsum",
    }
)

#: Softmax under its torch names (``torch.softmax``, ``F.softmax``, ``Tensor.softmax``, ``nn.Softmax``).
SOFTMAX_OPS = frozenset({"softmax"})

DIVISION_OPS = frozenset({"div", "__truediv__", "true_divide", "divide", "__itruediv__", "div_"})

LINEAR_LAYER_OPS = frozenset(
    {
        "linear",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
    }
)

# Linear or structural: the gradient is the proportional (epsilon -> 0) rule, or moves
# relevance without changing it. Max-type reductions and ReLU send relevance to the winners.
PASS_OPS = frozenset(
    {
        "__get__",
        "__getitem__",
        "__setitem__",
        "add",
        "__add__",
        "__radd__",
        "__iadd__",
        "add_",
        "sub",
        "__sub__",
        "__rsub__",
        "__isub__",
        "sub_",
        "subtract",
        "neg",
        "__neg__",
        "negative",
        "__pos__",
        "view",
        "view_as",
        "reshape",
        "reshape_as",
        "flatten",
        "unflatten",
        "ravel",
        "squeeze",
        "unsqueeze",
        "squeeze_",
        "unsqueeze_",
        "permute",
        "transpose",
        "transpose_",
        "t",
        "swapaxes",
        "swapdims",
        "movedim",
        "moveaxis",
        "contiguous",
        "expand",
        "expand_as",
        "broadcast_to",
        "repeat",
        "repeat_interleave",
        "tile",
        "narrow",
        "select",
        "index_select",
        "gather",
        "take_along_dim",
        "masked_select",
        "cat",
        "concat",
        "concatenate",
        "stack",
        "hstack",
        "vstack",
        "split",
        "chunk",
        "unbind",
        "tensor_split",
        "flip",
        "roll",
        "to",
        "type",
        "type_as",
        "float",
        "double",
        "half",
        "bfloat16",
        "clone",
        "detach",
        "sum",
        "mean",
        "nansum",
        "cumsum",
        "diagonal",
        "tril",
        "triu",
        "pad",
        "dropout",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "alpha_dropout",
        "feature_alpha_dropout",
        "relu",
        "relu_",
        "leaky_relu",
        "leaky_relu_",
        "max_pool1d",
        "max_pool2d",
        "max_pool3d",
        "max_pool1d_with_indices",
        "max_pool2d_with_indices",
        "max_pool3d_with_indices",
        "adaptive_max_pool1d",
        "adaptive_max_pool2d",
        "adaptive_max_pool3d",
        "adaptive_max_pool1d_with_indices",
        "adaptive_max_pool2d_with_indices",
        "adaptive_max_pool3d_with_indices",
        "avg_pool1d",
        "avg_pool2d",
        "avg_pool3d",
        "adaptive_avg_pool1d",
        "adaptive_avg_pool2d",
        "adaptive_avg_pool3d",
        "max",
        "amax",
        "min",
        "amin",
        "maximum",
        "minimum",
        "where",
        "masked_fill",
        "masked_fill_",
        "index_put",
        "index_put_",
        "scatter",
        "scatter_add",
        "index_add",
        "copy_",
        "zero_",
        "fill_",
        "new_zeros",
        "new_ones",
        "new_empty",
        "new_full",
        "new_tensor",
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
        "interpolate",
        "upsample",
        "pixel_shuffle",
        "pixel_unshuffle",
        "unfold",
        "fold",
        "as_strided",
        "view_as_real",
        "view_as_complex",
        "real",
        "imag",
        "split_with_sizes",
        "unsafe_split",
        "unsafe_chunk",
        "dsplit",
        "hsplit",
        "vsplit",
        "atleast_1d",
        "atleast_2d",
        "atleast_3d",
        "flatten_",
        "align_as",
        "rename",
        "refine_names",
        "numpy",
        "tolist",
        "item",
        "__len__",
        "__iter__",
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
        "__format__",
        "__repr__",
        "requires_grad_",
        "retain_grad",
        "register_hook",
    }
)


def op_name(func: Callable) -> str:
    """A torch function's short name (``torch.Tensor.__mul__`` -> ``'__mul__'``)."""
    return getattr(func, "__name__", None) or type(func).__name__


def _dependent(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.requires_grad
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, torch.Tensor) and v.requires_grad for v in value)
    return False


def _any_dependent(args: tuple, kwargs: dict) -> bool:
    return any(_dependent(a) for a in args) or any(_dependent(v) for v in kwargs.values())


def identity_handler(func: Callable, args: tuple, kwargs: dict) -> Any:
    """Identity rule for ``func(x, ...)`` elementwise (see :class:`lrp_domains.rules.Identity`)."""
    x = args[0]
    if not (isinstance(x, torch.Tensor) and x.requires_grad):
        return func(*args, **kwargs)
    rest = args[1:]
    return identity_rule(x, lambda t: func(t, *rest, **kwargs))


def uniform_handler(func: Callable, args: tuple, kwargs: dict) -> Any:
    """Uniform rule for products: ``k`` input-dependent operands each get ``1/k`` of the relevance."""
    if op_name(func) == "einsum":
        equation, operands = args[0], args[1:]
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = tuple(operands[0])
        k = sum(isinstance(t, torch.Tensor) and t.requires_grad for t in operands)
        if k > 1:
            operands = tuple(scale_grad(t, 1.0 / k) if t.requires_grad else t for t in operands)
        return func(equation, *operands, **kwargs)
    k = sum(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
    if k > 1:
        args = tuple(scale_grad(a, 1.0 / k) if isinstance(a, torch.Tensor) and a.requires_grad else a for a in args)
    return func(*args, **kwargs)


def pass_handler(func: Callable, args: tuple, kwargs: dict) -> Any:
    """Keep the gradient (for softmax under AttnLRP, for instance)."""
    return func(*args, **kwargs)


def stop_handler(func: Callable, args: tuple, kwargs: dict) -> Any:
    """Stop rule: the result passes forward, no relevance back (softmax under CP-LRP)."""
    out = func(*args, **kwargs)
    return out.detach() if isinstance(out, torch.Tensor) else out


def epsilon_handler(epsilon: float = 1e-6) -> Callable[[Callable, tuple, dict], Any]:
    """Epsilon rule for a functional linear layer (``F.linear(x, W, b)``, ``F.conv2d``...)."""

    def handler(func: Callable, args: tuple, kwargs: dict) -> Any:
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.requires_grad:
            return epsilon_grad(out, epsilon)
        return out

    return handler


def default_table() -> dict[str, Callable]:
    """The built-in functional rules, by torch function name."""
    table: dict[str, Callable] = {name: identity_handler for name in IDENTITY_RULE_OPS}
    table.update({name: uniform_handler for name in PRODUCT_OPS})
    table.update({name: epsilon_handler() for name in LINEAR_LAYER_OPS})
    return table


class FunctionalRules(TorchFunctionMode):
    """The torch-function mode a :class:`~lrp_domains.core.engine.scope.Scope` runs a model's forward in."""

    def __init__(self, scope: Scope, table: dict[str, Callable]) -> None:
        super().__init__()
        # weakly: the scope holds its mode, and a cycle would leave every scope (its calls, their
        # closures) to the garbage collector instead of freeing it when the call returns
        self.scope: Scope = weakref.proxy(scope)
        self.table = table

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        if not self.scope.functional_active():
            return func(*args, **kwargs)
        name = op_name(func)
        handler = self.table.get(name)
        ledger = self.scope.ledger
        if ledger is not None and _tapped(name, handler, args, kwargs):
            key = (f"{self.scope.ledger_label()}:{name}", _rule_label(name, handler))
            args = ledger.tap_all(key, tuple(args), "in")
            kwargs = {k: ledger.tap_all(key, v, "in") for k, v in kwargs.items()}
            return self._dispatch(func, name, handler, args, kwargs, lambda out: ledger.tap_all(key, out, "out"), key)
        return self._dispatch(func, name, handler, args, kwargs, None)

    def _dispatch(
        self,
        func: Callable,
        name: str,
        handler: Callable | None,
        args: tuple,
        kwargs: dict,
        tap_out: Callable[[Any], Any] | None,
        key: tuple[str, str] | None = None,
    ) -> Any:
        if name in SOFTMAX_OPS and args and _dependent(args[0]):
            return self._softmax(func, handler, name, args, kwargs, tap_out, key)
        if handler is not None:
            out = handler(func, args, kwargs)
        elif name in DIVISION_OPS and len(args) > 1 and _dependent(args[1]):
            self.scope.record_uncovered(f"{name} by an input-dependent tensor")
            out = func(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
            if name not in PASS_OPS and name not in DIVISION_OPS and _any_dependent(args, kwargs) and _dependent(out):
                self.scope.record_uncovered(name)
        return out if tap_out is None else tap_out(out)

    def _softmax(
        self,
        func: Callable,
        handler: Callable | None,
        name: str,
        args: tuple,
        kwargs: dict,
        tap_out: Callable[[Any], Any] | None,
        key: tuple[str, str] | None,
    ) -> Any:
        """A softmax as any other call (its rule, else uncovered), remembered with its logits (and
        its ledger row, which leaves the ledger when the logits are explained instead)."""
        out = handler(func, args, kwargs) if handler is not None else func(*args, **kwargs)
        uncovered = None
        if handler is None and _dependent(out):
            uncovered = self.scope.record_uncovered(name)
        if tap_out is not None:
            out = tap_out(out)
        self.scope.record_softmax(out, args[0], uncovered, key)
        return out


#: Questions about a tensor that return no tensor: nothing to tap.
QUERY_OPS = frozenset(
    {
        "dim",
        "ndimension",
        "size",
        "numel",
        "nelement",
        "stride",
        "storage_offset",
        "is_floating_point",
        "is_complex",
        "is_contiguous",
        "data_ptr",
        "element_size",
        "get_device",
        "item",
        "tolist",
        "__len__",
        "__bool__",
        "__format__",
        "__repr__",
        "__hash__",
        "__get__",
    }
)

#: Operations that move relevance unchanged unless they mix a constant into an input-dependent
#: tensor (a bias added in ``forward``, a masked fill, a constant concatenated): then the
#: constant takes its share, and the ledger taps them.
CONSTANT_MIXING = frozenset(
    {
        "add",
        "__add__",
        "__radd__",
        "sub",
        "__sub__",
        "__rsub__",
        "subtract",
        "masked_fill",
        "where",
        "cat",
        "concat",
        "concatenate",
        "stack",
        "pad",
        "index_put",
        "scatter",
        "scatter_add",
        "index_add",
    }
)


def _constant(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and not value.requires_grad and bool(value.ne(0).any())
    if isinstance(value, (list, tuple)):
        return any(_constant(v) for v in value)
    return isinstance(value, float) and value != 0.0


def _tapped(name: str, handler: Callable | None, args: tuple, kwargs: dict) -> bool:
    """Whether the ledger taps this functional call (see :mod:`lrp_domains.core.engine.ledger`)."""
    if not _any_dependent(args, kwargs) or name.startswith("__i") or (name.endswith("_") and not name.startswith("__")):
        return False  # nothing input-dependent, or in place (a tap is a view)
    if name in QUERY_OPS:
        return False
    if handler is not None or name in DIVISION_OPS and len(args) > 1 and _dependent(args[1]):
        return True
    if name in CONSTANT_MIXING:
        numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        scalar = name in ("add", "__add__", "__radd__", "sub", "__sub__", "__rsub__", "subtract", "masked_fill")
        return (
            _constant([a for a in args if isinstance(a, (torch.Tensor, list, tuple))])
            or _constant([v for v in kwargs.values() if isinstance(v, (torch.Tensor, float))])
            or (scalar and any(float(v) != 0.0 for v in numbers))
        )
    return name not in PASS_OPS and name not in DIVISION_OPS


def _rule_label(name: str, handler: Callable | None) -> str:
    if handler is not None:
        # "uniform_handler" -> "uniform", "epsilon_handler.<locals>.handler" -> "epsilon"
        return (
            getattr(handler, "__qualname__", op_name(handler)).split(".")[0].removesuffix("_handler").replace("_", " ")
        )
    if name in CONSTANT_MIXING:
        return "a constant operand"
    return "no rule (its gradient)"
