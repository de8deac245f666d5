"""``attribute``: LRP with tangermeme's calling convention, for ``func=`` in tangermeme's tools.

tangermeme stacks any sequence edit with any attribution through ``func=``
(``marginalize(model, X, motif, func=deep_lift_shap)``, ``substitution_effect``, ``ablate``,
``space``): the function is called as ``func(model, X, args=..., **kwargs)`` and returns a tensor
shaped like ``X``. :func:`attribute` is that function for LRP::

    from tangermeme.marginalize import marginalize
    from lrp_domains.bio import attribute

    result = marginalize(model, X, "CTCAGTGATG", func=attribute)   # y_before, y_after: (N, 4, L)

One forward and one backward pass per batch (no references to shuffle, no averaging over them),
through :func:`~lrp_domains.core.engine.attribution.explain`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from lrp_domains.bio.architectures.layouts import SequenceModel, architecture_of
from lrp_domains.bio.sequences.explainer import observed_relevance
from lrp_domains.bio.sequences.targets import GenomicTarget, TrackTarget, parse_sequence_target
from lrp_domains.core.composite import Composite
from lrp_domains.core.engine.attribution import explain, model_device, model_dtype
from lrp_domains.errors import InputError

__all__ = ["attribute"]


class _WithArgs(nn.Module):
    """``model(x, *args)`` for one batch: tangermeme's ``args`` (extra model inputs, one row per
    example) ride along with the batch they belong to."""

    def __init__(self, model: nn.Module, args: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.args = tuple(args)

    def forward(self, x: torch.Tensor) -> Any:  # noqa: D102
        return self.model(x, *self.args)


@contextmanager
def _on(model: nn.Module, device: torch.device | str | None) -> Iterator[torch.device]:
    """The model on ``device`` for the block (None: where it is), and back where it was after,
    as tangermeme's functions do."""
    home = model_device(model)
    wanted = home if device is None else torch.device(device)
    moved = wanted.type != home.type or (wanted.index is not None and wanted.index != home.index)
    if moved:
        model.to(wanted)
    try:
        yield model_device(model)
    finally:
        if moved:
            model.to(home)


def _one_hot(X: Any) -> torch.Tensor:
    if hasattr(X, "to_one_hot"):  # a tangermeme PackedSequence
        X = X.to_one_hot()
    X = torch.as_tensor(X)
    if X.dim() != 3:
        raise InputError(f"X must be one-hot sequences (N, alphabet, length), got shape {tuple(X.shape)}")
    return X


def attribute(
    model: nn.Module,
    X: torch.Tensor,
    args: Sequence[torch.Tensor] | None = None,
    target: Any = 0,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    hypothetical: bool = False,
    composite: str | Composite = "genomics",
    *,
    strict: bool = False,
    verbose: bool = False,
) -> torch.Tensor:
    """LRP attributions of one-hot sequences ``X`` ``(N, A, L)``, shaped like ``X`` (on the CPU),
    called as tangermeme's ``deep_lift_shap``.

    Parameters
    ----------
    model:
        The model, called as ``model(X)`` or ``model(X, *args)``; explained in eval mode and returned
        unchanged. Without ``args``, bpnet-lite models get all-zero control tracks and channels-last
        models (Enformer) the transposed input, as :class:`~lrp_domains.bio.SequenceExplainer` gives
        them.
    X:
        One-hot sequences ``(N, A, L)`` (int8 or float; a tangermeme ``PackedSequence`` is decoded).
    args:
        Extra model inputs, each with one row per example (e.g. control tracks), or None.
    target:
        An output index (``model(X)[:, target]`` for ``(N, outputs)``; default 0, as tangermeme's),
        one per example, a callable on the output, a genomic target
        (:func:`~lrp_domains.bio.profile_target`, ``counts_target``, ``track_target``,
        :func:`~lrp_domains.bio.specificity_target`) or its text (``"counts"``,
        ``"specific: tracks 3,7 vs rest"``, ``"1 vs 0"``: see
        :func:`~lrp_domains.bio.parse_sequence_target`).
    batch_size:
        Sequences per forward and backward pass (tangermeme counts sequence-reference pairs; LRP
        has no references). Results do not depend on it.
    device:
        Where to compute (None: where the model is); a model elsewhere is moved there for the
        call and back after, as tangermeme does.
    hypothetical:
        True: every letter's hypothetical contribution at every position (what it would receive
        at value 1), as ``deep_lift_shap(..., hypothetical=True)``; False: each position's relevance
        on its observed letter, 0 elsewhere (``hypothetical x X`` to first order).
    composite:
        ``"genomics"`` (default) or any composite name or :class:`~lrp_domains.core.composite.Composite`.
    strict:
        Raise on operations no rule covers instead of warning.
    verbose:
        A progress bar over batches.
    """
    X = _one_hot(X)
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(target, str):
        target = parse_sequence_target(target)
    dtype = model_dtype(model) or torch.get_default_dtype()
    with _on(model, device) as home:
        architecture = architecture_of(model) if args is None else None
        if isinstance(target, TrackTarget):
            target = target.resolved(architecture.track_layout if architecture is not None else "NLC")
        output = target.pick if isinstance(target, GenomicTarget) else None
        if output is None and architecture is not None and not architecture.plain:
            output = GenomicTarget().pick  # the one head of a tuple or dict output

        def run(runner: nn.Module, batch: torch.Tensor, batch_target: Any, size: int | None) -> torch.Tensor:
            result = explain(
                runner,
                batch.to(home, dtype),
                target=batch_target,
                composite=composite,
                batch_size=size,
                strict=strict,
                progress=verbose and size is not None,
                hypothetical=hypothetical,
                output=output,
                check_delta=False,
            )
            if hypothetical:
                assert result.hypothetical is not None
                return result.hypothetical.detach().cpu()
            assert isinstance(result.relevance, torch.Tensor)
            return observed_relevance(batch.detach().cpu().to(dtype), result.relevance.detach().cpu())

        if architecture is not None:  # one scope for every batch
            plain = architecture.plain
            return run(model if plain else SequenceModel(model, architecture), X, target, int(batch_size))
        parts = []  # the extra inputs ride with their batch
        for start in range(0, X.shape[0], int(batch_size)):
            stop = start + int(batch_size)
            part = target[start:stop] if isinstance(target, (list, tuple, torch.Tensor)) else target
            extra = [torch.as_tensor(a)[start:stop].to(home) for a in args or ()]
            parts.append(run(_WithArgs(model, extra), X[start:stop], part, None))
        return torch.cat(parts)
