"""LRP with Captum's interface: :class:`LRP` and :class:`LayerLRP`, Captum ``Attribution`` classes
that run :func:`~lrp_domains.core.engine.attribution.explain`.

``LRP(model, composite=...).attribute(inputs, target=..., additional_forward_args=...)`` returns
relevance shaped like ``inputs`` (a tuple for a tuple), as Captum's attribution methods do, so it
goes wherever a Captum method goes: ``NoiseTunnel(LRP(model))`` (SmoothGrad over LRP), Captum's
visualisation, inseq. The rules are this project's (AttnLRP for transformers, the genomics
composite, any named composite), not Captum's own ``LRP``.

Transformers are explained from their embeddings, as Captum users feed ``LayerIntegratedGradients``:
either a forward function taking the embeddings (``forward_func=lambda embeds, mask:
model(inputs_embeds=embeds, attention_mask=mask).logits`` and the embeddings as inputs), or
:class:`LayerLRP` with the embedding layer and token ids as inputs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum.attr import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import nn

from lrp_domains.core.composite import Composite
from lrp_domains.core.engine.attribution import explain, resolve_composite
from lrp_domains.core.engine.result import Explanation

__all__ = ["LRP", "LayerLRP"]

#: Composites the domain packages register when imported.
_REGISTERED_BY = {"attnlrp": "lrp_domains.text", "cp-lrp": "lrp_domains.text", "genomics": "lrp_domains.bio"}


def _composite(composite: str | Composite) -> Composite:
    if isinstance(composite, str) and composite in _REGISTERED_BY:
        importlib.import_module(_REGISTERED_BY[composite])
    return resolve_composite(composite)


class _Forward(nn.Module):
    """``forward_func(*inputs, *additional_forward_args)`` as a module whose submodule is the
    explained model, so that one scope covers the model and the function around it. Exposes the
    model's transformers ``config`` (the attention rules are installed through it)."""

    def __init__(self, model: nn.Module, forward_func: Callable, n_inputs: int, extra: tuple) -> None:
        super().__init__()
        self.model = model
        self.forward_func = forward_func
        self.n_inputs = n_inputs
        self.extra = extra
        config = next(
            (m.config for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation_internal")),
            None,
        )
        if config is not None:
            self.config = config

    def forward(self, **inputs: torch.Tensor) -> Any:  # noqa: D102
        return self.forward_func(*[inputs[f"input{i}"] for i in range(self.n_inputs)], *self.extra)


class _Indexed:
    """Captum's tuple targets (an index into each example's multi-dimensional output), one for all
    examples or one per example, as a callable target."""

    def __init__(self, indices: Sequence[tuple]) -> None:
        self.indices = [tuple(int(i) for i in index) for index in indices]

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        n = output.shape[0]
        if len(self.indices) == 1:
            index: list[Any] = [slice(None), *self.indices[0]]
            return output[tuple(index)]
        if len(self.indices) != n:
            raise ValueError(f"got {len(self.indices)} targets for {n} examples")
        rows = torch.arange(n, device=output.device)
        columns = [torch.tensor(axis, device=output.device) for axis in zip(*self.indices)]
        return output[tuple([rows, *columns])]


def _target(target: Any) -> Any:
    """Captum's targets in the core's terms (None, an index, per-example indices, a label or a
    contrast by name, a callable stay as they are)."""
    if isinstance(target, tuple):
        return _Indexed([target])
    if isinstance(target, list) and target and isinstance(target[0], tuple):
        return _Indexed(target)
    if isinstance(target, torch.Tensor) and target.dim() == 0:
        return int(target)
    return target


class LRP(GradientAttribution):
    """Layer-wise Relevance Propagation with Captum's interface, on this project's engine.

    Parameters
    ----------
    model:
        The ``nn.Module`` whose layers get the composite's rules.
    composite:
        A composite name (``"epsilon"``, ``"attnlrp"`` for transformers, ``"genomics"``, see
        ``lrp-domains composites``) or a :class:`~lrp_domains.core.composite.Composite`.
    forward_func:
        What Captum calls the forward function: ``forward_func(*inputs, *additional_forward_args)``
        returns the output (default: ``model``). Anything it computes outside ``model`` runs
        inside the same scope (functional rules apply).
    output:
        ``output(raw, batch)``: which tensor of the output is explained (default: the output, its
        ``.logits``, or its first element).
    labels:
        Names of the output's entries: targets by name (``"positive"``) and contrasts
        (``"positive vs negative"``).
    strict:
        Raise on operations no rule covers instead of warning.
    """

    def __init__(
        self,
        model: nn.Module,
        composite: str | Composite = "epsilon",
        forward_func: Callable | None = None,
        *,
        output: Callable | None = None,
        labels: Sequence[str] | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(forward_func if forward_func is not None else model)
        self.model = model
        self.composite = _composite(composite)
        self.output = output
        self.labels = list(labels) if labels is not None else None
        self.strict = strict

    @property
    def multiplies_by_inputs(self) -> bool:
        """Relevance is input x modified gradient (a global attribution, as Captum's LRP)."""
        return True

    def has_convergence_delta(self) -> bool:
        """``return_convergence_delta=True`` gives the explained output minus the summed relevance."""
        return True

    def _explain(
        self, inputs: tuple[torch.Tensor, ...], target: Any, additional_forward_args: Any, sources: Any = None
    ) -> Explanation:
        extra = (
            ()
            if additional_forward_args is None
            else tuple(additional_forward_args)
            if isinstance(additional_forward_args, tuple)
            else (additional_forward_args,)
        )
        options = dict(
            target=_target(target),
            composite=self.composite,
            strict=self.strict,
            output=self.output,
            labels=self.labels,
            check_delta=False,
        )
        direct = self.forward_func is self.model and len(inputs) == 1 and not extra and sources is None
        if direct and inputs[0].is_floating_point():
            return explain(self.model, inputs[0], **options)
        runner = _Forward(self.model, self.forward_func, len(inputs), extra)
        return explain(runner, {f"input{i}": x for i, x in enumerate(inputs)}, sources=sources, **options)

    @log_usage()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """Relevance of ``inputs`` for ``target``, shaped like ``inputs`` (a tuple for a tuple).

        ``target``: as Captum's (None: the output when it has one value per example, else the
        predicted class; an index; a tuple indexing a multi-dimensional output; one per example as
        a list or tensor), or a label name or contrast (``"positive vs negative"``, with
        ``labels``), or a callable ``output -> (N,)``. Relevance is read for floating-point inputs
        (embeddings, one-hot sequences); integer inputs (token ids) get zeros: explain token models
        from their embeddings (a ``forward_func`` taking them) or with :class:`LayerLRP`.
        ``return_convergence_delta=True``: also the per-example delta, the explained output minus
        the summed relevance (what biases and stabilizers absorbed).
        """
        tensors = inputs if isinstance(inputs, tuple) else (inputs,)
        result = self._explain(tensors, target, additional_forward_args)
        relevance = result.relevance
        found = (
            [relevance]
            if isinstance(relevance, torch.Tensor)
            else [relevance.get(f"input{i}") for i in range(len(tensors))]
        )
        shaped = tuple(
            torch.zeros(
                x.shape, dtype=torch.get_default_dtype() if not x.is_floating_point() else x.dtype, device=x.device
            )
            if r is None
            else r.detach().to(x.device, x.dtype if x.is_floating_point() else r.dtype)
            for x, r in zip(tensors, found)
        )
        attributions = shaped if isinstance(inputs, tuple) else shaped[0]
        if return_convergence_delta:
            return attributions, result.delta.detach().to(tensors[0].device)
        return attributions


class LayerLRP(LRP, LayerAttribution):
    """LRP relevance of a layer's output, with Captum's ``LayerLRP`` interface: the way Captum
    users explain transformers with ``LayerIntegratedGradients(forward_func, model.embeddings)``,
    token ids as inputs and the embedding layer's output explained.

    ``layer``: a submodule of ``model``, or several (a list: a tuple of relevances). Relevance stops
    at the layer (nothing flows past it); ``attribute`` returns it shaped like the layer's output.
    Other parameters as :class:`LRP`.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module | Sequence[nn.Module],
        composite: str | Composite = "epsilon",
        forward_func: Callable | None = None,
        *,
        output: Callable | None = None,
        labels: Sequence[str] | None = None,
        strict: bool = False,
    ) -> None:
        LRP.__init__(self, model, composite, forward_func, output=output, labels=labels, strict=strict)
        LayerAttribution.__init__(self, self.forward_func, layer)

    @log_usage()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        verbose: bool = False,
    ) -> Any:
        """Relevance of the layer's output (``target``, ``return_convergence_delta`` as
        :meth:`LRP.attribute`; the delta counts the layer's relevance as the explanation's)."""
        if attribute_to_layer_input:
            raise NotImplementedError(
                "LayerLRP reads relevance at the layer's output; give the layer before it for its input"
            )
        layers = list(self.layer) if isinstance(self.layer, (list, tuple)) else [self.layer]
        found_names = {id(module): name for name, module in self.model.named_modules()}
        missing = [type(layer).__name__ for layer in layers if id(layer) not in found_names]
        if missing:
            raise ValueError(f"LayerLRP: the layers {missing} are not submodules of the model")
        # The model runs wrapped (as "model") when relevance is read at its layers.
        names = [f"model.{found_names[id(layer)]}".rstrip(".") for layer in layers]
        tensors = inputs if isinstance(inputs, tuple) else (inputs,)
        result = self._explain(tensors, target, additional_forward_args, sources=names)
        found = tuple(result.sources[name].detach() for name in names)
        attributions = found if isinstance(self.layer, (list, tuple)) else found[0]
        if return_convergence_delta:
            return attributions, result.delta.detach()
        return attributions
