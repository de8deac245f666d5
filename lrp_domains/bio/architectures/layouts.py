"""How published sequence models are called: input layout, control tracks, output layout.

:func:`architecture_of` recognises bpnet-lite's ``BPNet``/``ChromBPNet`` (one-hot ``(N, 4, L)``
plus optional control tracks; returns ``(profile (N, strands, L), counts)``), enformer-pytorch's ``Enformer``
(one-hot channels-last ``(N, L, 4)``; returns a dict of heads ``(N, bins, tracks)``, or one head
with ``head=``) and borzoi-pytorch's ``Borzoi`` (``(N, 4, L)``; returns ``(N, tracks, bins)``), by
class, without importing those packages. :class:`SequenceModel` wraps a model so that the
explainer always hands it ``(N, A, L)`` one-hot sequences: it transposes for channels-last
models and adds all-zero control tracks where the model expects them (as bpnet-lite's
``ControlWrapper`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lrp_domains.errors import InputError

__all__ = ["Architecture", "SequenceModel", "architecture_of"]

#: Input layouts: channels first (``(N, A, L)``, bpnet-lite, Borzoi) or last (``(N, L, A)``, Enformer).
INPUT_LAYOUTS = ("NCL", "NLC")


@dataclass(frozen=True)
class Architecture:
    """How to call a sequence model: ``layout`` of its one-hot input (``"NCL"``: ``(N, A, L)``;
    ``"NLC"``: ``(N, L, A)``), number of all-zero ``controls`` tracks to pass as its second
    argument, the ``track_layout`` of its multi-track output (``"NLC"``: ``(N, bins, tracks)``;
    ``"NCL"``: ``(N, tracks, bins)``), and its ``name``."""

    name: str = "custom"
    layout: str = "NCL"
    controls: int = 0
    track_layout: str = "NLC"

    @property
    def plain(self) -> bool:
        """True when the model takes ``(N, A, L)`` alone (no wrapping needed)."""
        return self.layout == "NCL" and self.controls == 0


def _kind(model: nn.Module) -> tuple[str, str]:
    cls = type(model)
    return cls.__module__, cls.__name__


def architecture_of(model: nn.Module, layout: str | None = None) -> Architecture:
    """The :class:`Architecture` of ``model`` (bpnet-lite BPNet/ChromBPNet and its
    ``ControlWrapper``, Enformer, Borzoi; anything else: ``(N, A, L)`` in, ``(N, bins, tracks)``
    out). ``layout`` overrides the input layout."""
    if layout is not None and layout not in INPUT_LAYOUTS:
        raise InputError(
            f"layout={layout!r}: give 'NCL' (one-hot (N, 4, L), channels first) or 'NLC' "
            "((N, L, 4), channels last, as Enformer takes)"
        )
    source, name = _kind(model)
    if source.startswith("bpnetlite"):
        # Profiles are (N, strands, positions): tracks first. ControlWrapper and ChromBPNet make
        # their own controls (or ignore them).
        controls = 0 if name in ("ControlWrapper", "ChromBPNet") else int(getattr(model, "n_control_tracks", 0) or 0)
        found = Architecture(name, "NCL", controls, "NCL")
    elif source.startswith("enformer_pytorch"):
        found = Architecture(name, "NLC", 0, "NLC")
    elif source.startswith("borzoi_pytorch"):
        found = Architecture(name, "NCL", 0, "NCL")
    else:
        found = Architecture()
    if layout is not None and layout != found.layout:
        found = Architecture(found.name, layout, found.controls, found.track_layout)
    return found


class SequenceModel(nn.Module):
    """``model`` called with ``(N, A, L)`` one-hot sequences whatever its own input layout:
    transposed to ``(N, L, A)`` for channels-last models, with all-zero control tracks
    ``(N, controls, L)`` as second argument where the model takes them. Returns the model's raw
    output (tensor, tuple or dict). The wrapped model is a submodule (named ``model``)."""

    def __init__(self, model: nn.Module, architecture: Architecture) -> None:
        super().__init__()
        self.model = model
        self.architecture = architecture

    def forward(self, x: torch.Tensor) -> Any:  # noqa: D102
        arch = self.architecture
        inputs = x.transpose(1, 2) if arch.layout == "NLC" else x
        if arch.controls:
            control = torch.zeros(x.shape[0], arch.controls, x.shape[-1], dtype=x.dtype, device=x.device)
            return self.model(inputs, control)
        return self.model(inputs)
