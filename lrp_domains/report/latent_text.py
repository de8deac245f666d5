"""Report blocks for relevance inside a text transformer: a token x layer map of the residual
stream (:func:`lrp_domains.text.latent.layer_flow`) and a layer x head map of attention heads
(:func:`lrp_domains.text.latent.head_relevance`). Red: for the explained output; blue: against."""

from __future__ import annotations

import re

import numpy as np
from markupsafe import Markup

from lrp_domains.report.blocks import figure, plain_text
from lrp_domains.text.latent import HeadRelevance, LayerFlow

__all__ = ["head_figure", "layer_flow_figure"]


def _label(name: str) -> str:
    """A short label for a module name: its last numbered part (``bert.encoder.layer.3`` and
    ``model.layers.3.self_attn.o_proj`` -> ``layer 3``), else its last part (``embeddings``)."""
    found = re.findall(r"([A-Za-z_]\w*)\.(\d+)(?=\.|$)", name)
    if not found:
        return name.rsplit(".", 1)[-1]
    word, index = found[-1]
    return f"{'layer' if word in ('layer', 'layers', 'h', 'block', 'blocks') else word} {index}"


def _heatmap(
    values: np.ndarray, x_labels: list[str], y_labels: list[str], x_title: str, y_title: str, title: str, caption: str
) -> Markup:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = float(np.abs(values).max()) if values.size else 0.0
    scale = scale if scale > 0 else 1.0
    with plain_text():
        fig, ax = plt.subplots(
            figsize=(min(max(4.0, 0.42 * len(x_labels) + 2), 18), max(2.2, 0.38 * len(y_labels) + 1.2))
        )
        image = ax.imshow(
            values, cmap="bwr", vmin=-scale, vmax=scale, aspect="auto", origin="lower", interpolation="nearest"
        )
        ax.set_xticks(
            range(len(x_labels)),
            x_labels,
            rotation=60 if len(x_labels) > 6 else 0,
            ha="right" if len(x_labels) > 6 else "center",
            fontsize=8,
        )
        ax.set_yticks(range(len(y_labels)), y_labels, fontsize=8)
        ax.set_xlabel(x_title)
        ax.set_ylabel(y_title)
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, label="relevance", fraction=0.04, pad=0.02)
        return figure(fig, caption)


def layer_flow_figure(flow: LayerFlow, caption: str = "") -> Markup:
    """The residual stream's relevance as a heatmap: tokens across, layers up (the embeddings at
    the bottom), one colour scale for all layers."""
    target = "" if flow.target is None else f" for {flow.target}"
    return _heatmap(
        flow.relevance,
        list(flow.tokens),
        [_label(name) for name in flow.layers],
        "token",
        "layer",
        f"relevance per token and layer{target} (explained {flow.explained:.3g})",
        caption or "Relevance of each token in the residual stream after each layer (LRP).",
    )


def head_figure(heads: HeadRelevance, caption: str = "") -> Markup:
    """Each attention head's relevance, averaged over the texts, as a layers x heads heatmap."""
    mean = heads.relevance.mean(0)
    return _heatmap(
        mean,
        [str(h) for h in range(mean.shape[1])],
        [_label(name) for name in heads.layers],
        "head",
        "layer",
        f"mean relevance per attention head over {len(heads.texts)} text(s)",
        caption or "Relevance of each attention head (read at its output projection), mean over texts.",
    )
