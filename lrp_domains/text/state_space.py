"""MambaLRP's rules for selective state-space models (Jafari et al., NeurIPS 2024), per model instance.

A Mamba mixer computes ``y = SSM(dt, B, C)(x) * silu(z)``: a causal convolution and SiLU give ``x``,
the selection projections give the time step ``dt`` and the matrices ``B`` and ``C`` from ``x``
itself, and ``h_t = exp(A dt_t) h_{t-1} + dt_t B_t x_t``, ``y_t = C_t h_t + D x_t`` is the scan.
MambaLRP's rules, in the modified-gradient form of this package:

- **Selective SSM**: ``dt``, ``B`` and ``C`` are held constant (their values stay, their gradient is
  stopped), so the scan is linear in ``x`` and conserves; ``exp``, ``softplus``, ``clamp`` of the
  discretisation then act on constants. :class:`SelectiveScans` finds the mixers (transformers'
  Mamba, Mamba-2 and the hybrids that reuse them: Jamba, Bamba, Zamba, Falcon-H1...) and, while one
  runs, the functional rule for ``split`` (:func:`selection_split`) detaches the selection: the
  split of the selection projection into ``[dt, B, C]`` (Mamba-1) or of the convolution's output
  into ``[x, B, C]`` and of the input projection's ``[..., z, xBC, dt]`` (Mamba-2). This acts on
  transformers' own code wherever the split happens before the scan (the torch "slow" path on CPU,
  and the CUDA kernels, which receive detached ``dt``, ``B``, ``C``); the model's output is its own.
- **SiLU**: the identity rule (MambaLRP's choice, as AttnLRP's for activations).
- **The gate** ``y * silu(z)``: under ``attnlrp`` the uniform (half) rule, as MambaLRP and as
  AttnLRP's gated MLPs; under ``cp-lrp`` the gate is a constant, as CP-LRP's gates of gated MLPs
  (all of the product's relevance to ``y``). Both conserve.
- **Gated RMSNorm** (Mamba-2: ``w * norm(y * silu(z))``): :class:`GatedRMSNormRule`, the gate by the
  composite's product rule and the norm's statistics constant (the identity rule of RMSNorm).
- Convolutions and linear layers: epsilon (LRP-0 at ``epsilon=0``).

Mamba's hidden states never pass a softmax, so CP-LRP and AttnLRP differ here only in the gate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lrp_domains.core.gradients import identity_rule, scale_grad
from lrp_domains.core.rules import Rule

if TYPE_CHECKING:
    from lrp_domains.core.engine.scope import ModuleCall, Scope

__all__ = ["GatedRMSNormRule", "SelectiveScans", "is_gated_rms_norm", "selection_split", "state_space_functional"]

_RUNNING = threading.local()


def _mixers() -> list:
    stack = getattr(_RUNNING, "stack", None)
    if stack is None:
        stack = _RUNNING.stack = []
    return stack


def _selection(module: nn.Module) -> Callable[[list[int]], tuple[int, ...]] | None:
    """For an SSM mixer: which parts of a split of ``sizes`` are the selection (held constant);
    None for other modules. Recognised by the attributes transformers' mixers share."""
    if not hasattr(module, "A_log"):
        return None
    state = getattr(module, "ssm_state_size", None)
    groups, conv_dim, heads = (getattr(module, a, None) for a in ("n_groups", "conv_dim", "num_heads"))
    inner = getattr(module, "intermediate_size", None)
    if isinstance(groups, int) and isinstance(conv_dim, int) and isinstance(heads, int) and isinstance(state, int):
        # Mamba-2: in_proj -> [..., gate z, xBC, dt] (dt constant); conv(xBC) -> [x, B, C] (B, C constant).
        bc = groups * state

        def mamba2(sizes: list[int]) -> tuple[int, ...]:
            if len(sizes) >= 3 and sizes[-3:] == [inner, conv_dim, heads]:
                return (len(sizes) - 1,)
            if sizes == [inner, bc, bc]:
                return (1, 2)
            return ()

        return mamba2
    rank = getattr(module, "time_step_rank", None)
    if isinstance(rank, int) and isinstance(state, int) and hasattr(module, "x_proj"):
        # Mamba-1: x_proj(x) -> [dt, B, C], all constant.
        def mamba1(sizes: list[int]) -> tuple[int, ...]:
            return (0, 1, 2) if sizes == [rank, state, state] else ()

        return mamba1
    return None


def selection_split(func: Callable, args: tuple, kwargs: dict) -> Any:
    """``split``: inside a running SSM mixer, the selection's parts come out detached (see the
    module docstring); elsewhere the plain split."""
    out = func(*args, **kwargs)
    stack = _mixers()
    if not stack:
        return out
    sizes = args[1] if len(args) > 1 else kwargs.get("split_size_or_sections", kwargs.get("split_size"))
    if not isinstance(sizes, Sequence) or isinstance(sizes, torch.Tensor):
        return out
    constant = stack[-1]([int(s) for s in sizes])
    if not constant:
        return out
    return type(out)(part.detach() if i in constant else part for i, part in enumerate(out))


class SelectiveScans:
    """Canonizer: mark the SSM mixers of a model while they run (per-instance forward hooks, removed
    on exit), so that :func:`selection_split` holds their selection constant."""

    def __repr__(self) -> str:
        return "SelectiveScans()"

    def apply(self, model: nn.Module, scope: Scope) -> Callable[[], None] | None:
        """Hook every SSM mixer of ``model``; return the undo."""
        handles = []
        for module in model.modules():
            selection = _selection(module)
            if selection is None:
                continue

            def enter(_module: nn.Module, _args: Any, selection: Callable = selection) -> None:
                _mixers().append(selection)

            def leave(_module: nn.Module, _args: Any, _output: Any) -> None:
                stack = _mixers()
                if stack:
                    stack.pop()

            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave, always_call=True))
        if not handles:
            return None

        def undo() -> None:
            for handle in handles:
                handle.remove()

        return undo


def is_gated_rms_norm(module: nn.Module) -> bool:
    """A gated RMSNorm (``Mamba2RMSNormGated``, ``BambaRMSNormGated``, ``Zamba2RMSNormGated``...):
    ``w * norm(y * silu(z))`` with a 1-D ``weight``."""
    weight = getattr(module, "weight", None)
    return type(module).__name__.endswith("RMSNormGated") and isinstance(weight, torch.Tensor) and weight.dim() == 1


class GatedRMSNormRule(Rule):
    """``w * y_g / rms(y_g)`` with ``y_g = y * silu(z)``, groups of ``group_size``: the statistics
    constant (the RMSNorm identity rule: the modified gradient at ``y_g`` is ``w / rms``, so
    ``R_{y_g} = R_out``), SiLU by the identity rule and the product ``y * silu(z)`` by the uniform
    rule (``attnlrp``) or with the gate constant (``cp-lrp``). The output is the module's own."""

    cost = 3  # the module's forward, the gated product and the statistics again, an elementwise backward

    def __init__(self, gate_constant: bool = False) -> None:
        self.gate_constant = gate_constant

    def __repr__(self) -> str:
        return f"GatedRMSNormRule(gate_constant={self.gate_constant})"

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:
        y = args[0] if args else kwargs["hidden_states"]
        gate = args[1] if len(args) > 1 else kwargs.get("gate")
        out = call.original(*args, **kwargs)
        dependent = [t for t in (y, gate) if isinstance(t, torch.Tensor) and t.requires_grad]
        if not dependent:
            return out
        module = call.module
        compute = torch.float64 if y.dtype == torch.float64 else torch.float32
        yc = y.to(compute)
        if gate is not None:
            g = gate.to(compute)
            act = identity_rule(g, nn.functional.silu) if g.requires_grad else nn.functional.silu(g)
            if self.gate_constant:
                act = act.detach()
            elif act.requires_grad and yc.requires_grad:
                yc, act = scale_grad(yc, 0.5), scale_grad(act, 0.5)
            yc = yc * act
        width = yc.shape[-1]
        group = int(getattr(module, "group_size", width) or width)
        eps = float(getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6)))
        with torch.no_grad():
            grouped = yc.detach().reshape(*yc.shape[:-1], width // group, group)
            scale = torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + eps).expand_as(grouped).reshape(yc.shape)
            scale = scale * module.weight.to(compute)
        surrogate = (yc * scale).to(out.dtype)
        return out.detach() + (surrogate - surrogate.detach())


def state_space_functional(variant: str) -> dict[str, Callable]:
    """The functional rules the SSM rules add: ``split`` (:func:`selection_split`); under
    ``cp-lrp`` a functional SiLU's output is a gate (constant in the product it gates)."""
    table: dict[str, Callable] = {"split": selection_split}
    if variant == "cp-lrp":
        table["silu"] = _tagged_silu
    return table


def _tagged_silu(func: Callable, args: tuple, kwargs: dict) -> Any:
    from lrp_domains.core.functional import identity_handler
    from lrp_domains.text.rules import GATE_TAG

    out = identity_handler(func, args, kwargs)
    if isinstance(out, torch.Tensor) and out.requires_grad:
        setattr(out, GATE_TAG, True)
    return out
