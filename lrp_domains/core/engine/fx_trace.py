"""Tracing a model with ``torch.fx`` for the traced graph plan
(:mod:`lrp_domains.core.engine.graph_plan`), refusing what a trace would record wrongly: ``out +=
x`` (fx records ``out = out + x``), operations under another gradient, inference or autocast mode
than the trace began in (fx records no mode), and a ``forward`` that changes a module while it runs
(the modules get back what they held). Arguments after the input are traced at their defaults."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import fx, nn

__all__ = ["ASSERT_IS_NONE", "trace"]

#: fx's guard on an argument traced with its value None (``concrete_args``).
ASSERT_IS_NONE = getattr(fx._symbolic_trace, "_assert_is_none", None)


def trace(modules: list[nn.Module], model: nn.Module) -> fx.Graph | None:
    """``model``'s graph traced by ``torch.fx``, or None when it cannot be traced or its forward
    changed a module while tracing (an activation kept in an attribute, a counter): a forward
    whose effect is more than its output runs in the general engine, and the modules get back
    what they held."""
    held = [(m, dict(m.__dict__), dict(m._parameters), dict(m._buffers), dict(m._modules)) for m in modules]
    graph: fx.Graph | None
    try:
        defaults = _defaults(model)
        graph = None if defaults is None else _Tracer().trace(model, defaults)
    except Exception:  # noqa: BLE001 - control flow on tensors, a forward fx cannot trace: the general engine
        graph = None
    for module, attributes, parameters, buffers, children in held:
        if not (
            _same_items(module.__dict__, attributes)
            and _same_items(module._parameters, parameters)
            and _same_items(module._buffers, buffers)
            and _same_items(module._modules, children)
        ):
            graph = None
            _put_back(module._parameters, parameters)
            _put_back(module._buffers, buffers)
            _put_back(module._modules, children)
            _put_back(module.__dict__, attributes)
    return graph


def _augmented(self: fx.Proxy, other: Any) -> Any:
    raise fx.proxy.TraceError("an augmented assignment (out += x) on a traced tensor")


class _Proxy(fx.Proxy):
    """fx's proxy, refusing ``out += x``: fx has no in-place form of it and would record
    ``out = out + x``, which leaves alone what else holds ``out`` (the scope runs it in place, and a
    rule that keeps the layer's output for its backward says so)."""

    __iadd__ = __isub__ = __imul__ = __itruediv__ = __ifloordiv__ = __imod__ = __ipow__ = _augmented
    __imatmul__ = __iand__ = __ior__ = __ixor__ = __ilshift__ = __irshift__ = _augmented


class _Tracer(fx.Tracer):
    """``torch.fx.symbolic_trace``'s tracer with :class:`_Proxy`, refusing an operation recorded
    under another gradient or autocast mode than the trace began in (``with torch.no_grad():`` in
    a ``forward``): fx records no mode, so the operation would run with the call's."""

    def trace(self, root: Any, concrete_args: Any = None) -> fx.Graph:  # noqa: D102
        self._modes = _modes()
        return super().trace(root, concrete_args)

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:  # noqa: D102
        if _modes() != self._modes:
            raise fx.proxy.TraceError("an operation under another gradient or autocast mode")
        return super().create_node(*args, **kwargs)

    def proxy(self, node: fx.Node) -> fx.Proxy:  # noqa: D102
        return _Proxy(node, self)


def _modes() -> tuple[bool, bool, bool]:
    return torch.is_grad_enabled(), torch.is_inference_mode_enabled(), torch.is_autocast_enabled()


def _defaults(model: nn.Module) -> dict[str, Any] | None:
    """The default of each argument of ``model.forward`` after the input (the engine calls
    ``model(x)``: they take their defaults), traced as such (``if mask is None`` takes its branch);
    None when one has no default or the forward takes ``*args`` or ``**kwargs``."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if not parameters or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
        return None
    if any(p.default is p.empty for p in parameters[1:]):
        return None
    return {p.name: p.default for p in parameters[1:]}


def _same_items(now: dict, held: dict) -> bool:
    """The same keys holding the very same objects (tensors compared by identity, not value)."""
    return now.keys() == held.keys() and all(now[k] is v for k, v in held.items())


def _put_back(now: dict, held: dict) -> None:
    now.clear()
    now.update(held)
