"""Walking a model's modules and parameters with plain recursion instead of ``nn.Module``'s
nested generators.

The engine walks the model once per call (eval mode, traced pairs and the scope share the walk;
device and dtype stop at the first floating-point parameter); for one example at a time a walk is
part of what a call costs. Measured with
``timeit`` on ``bench adapter``'s 25-module residual CNN: ``modules`` 9.4 us against
``list(model.modules())``'s 26 us, ``named_modules`` 18 us against 20 us. The same modules, names
and order (depth first, a module before its children, each once).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["device_and_dtype", "modules", "named_modules"]


def modules(model: nn.Module) -> list[nn.Module]:
    """``list(model.modules())``: each module once, in the same order (2.5x faster, measured on a
    25-module residual CNN)."""
    found: list[nn.Module] = []
    _visit(model, found, set())  # seen by identity, as nn.Module's own walk keeps them
    return found


# Module-level, not closures: a closure that calls itself is a reference cycle, left for the
# garbage collector on every walk (a collection every few calls at one example per call).
def _visit(module: nn.Module, found: list[nn.Module], seen: set[nn.Module]) -> None:
    seen.add(module)
    found.append(module)
    for child in module._modules.values():
        if child is not None and child not in seen:
            _visit(child, found, seen)


def named_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``list(model.named_modules())``: each module once with its dotted name, in the same order."""
    found: list[tuple[str, nn.Module]] = []
    _visit_named("", model, found, set())
    return found


def _visit_named(name: str, module: nn.Module, found: list[tuple[str, nn.Module]], seen: set[nn.Module]) -> None:
    seen.add(module)
    found.append((name, module))
    prefix = name + "." if name else ""
    for key, child in module._modules.items():
        if child is not None and child not in seen:
            _visit_named(prefix + key, child, found, seen)


def device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    """The device of the model's first parameter (else its first buffer; else the CPU) and the
    dtype of its first floating-point parameter (None without one), walking only as far as the
    first floating-point parameter (most models: their first layer)."""
    found: list[torch.device] = []  # the first parameter's device, once seen
    dtype = _first_floating(model, found, set())
    if found:
        return found[0], dtype
    for module in modules(model):
        for buffer in module._buffers.values():
            if buffer is not None:
                return buffer.device, None
    return torch.device("cpu"), None


def _first_floating(module: nn.Module, device: list[torch.device], seen: set[nn.Module]) -> torch.dtype | None:
    """The dtype of the first floating-point parameter in ``modules`` order (None without one);
    ``device`` gets the first parameter's device."""
    seen.add(module)
    for param in module._parameters.values():
        if param is None:
            continue
        if not device:
            device.append(param.device)
        if param.is_floating_point():
            return param.dtype
    for child in module._modules.values():
        if child is not None and child not in seen:
            dtype = _first_floating(child, device, seen)
            if dtype is not None:
                return dtype
    return None
