"""What a sequence model's filters carry: Concept Relevance Propagation (Achtibat et al., Nature
Machine Intelligence 5, 2023) on convolution filters, read as motifs.

For each filter (a channel of a convolution layer's output):

- its **share** of the prediction's relevance: the filter's relevance (CRP Eq. 5: activation x
  modified gradient, summed over positions) summed over the sequences, over the relevance of all
  filters;
- its **conditional seqlets**: the input relevance conditioned on the filter (CRP Eq. 6), called
  into seqlets with the same null as :func:`~lrp_domains.bio.motifs.seqlets.call_seqlets`;
- a **CWM** and **PPM** aligned from them: each seqlet re-centred on its strongest ``width``-base
  window (``width``: the layer's receptive field for a first-layer convolution), the conditional
  relevance of the observed bases averaged (CWM, tfmodisco's contribution weight matrix) and the
  one-hot averaged (PPM);
- the best **JASPAR match** of the PPM, trimmed to the columns where the CWM is at least
  :data:`TRIM` of its strongest column (tfmodisco-lite's trimming), by the TOMTOM statistics
  (:func:`~lrp_domains.bio.motifs.seqlets.match_matrix`; a match needs E-value <= ``max_e``);
- **reference examples**: the sequences where the filter receives the most relevance (CRP's
  relevance maximization).

:func:`filter_weight_matches` is the common baseline: the same matching on each first-layer
filter's weights read as a PPM (:func:`weights_to_ppm`: scaled so the largest absolute weight is 4,
exponentiated, normalised per column; the convention of Koo & Eddy, PLoS Comput Biol 2019).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lrp_domains.bio.motifs.seqlets import call_seqlets, load_motifs, match_matrix
from lrp_domains.bio.sequences.explainer import (
    SequenceExplainer,
    SequenceExplanation,
    SequenceInput,
    observed_relevance,
)
from lrp_domains.core.engine.attribution import model_dtype
from lrp_domains.core.latent import explain_concepts
from lrp_domains.errors import InputError

__all__ = [
    "FilterConcepts",
    "consensus",
    "explain_filters",
    "filter_weight_matches",
    "first_conv",
    "match_ppms",
    "trimmed",
    "weights_to_ppm",
]

#: Width of the aligned CWM when the layer has no kernel of its own.
DEFAULT_WIDTH = 15
#: PPM columns kept for matching: where the CWM's absolute column sum is at least this share of
#: the strongest column's (tfmodisco-lite's ``trim_threshold``).
TRIM = 0.3


def first_conv(model: nn.Module) -> str:
    """Name of the model's first convolution module (the default layer for filter concepts)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return name
    raise InputError("the model has no convolution layer; name the layer to read concepts from (--layer)")


@dataclass
class FilterConcepts:
    """Filter concepts of one layer (see the module docstring).

    ``frame``: one row per reported filter, strongest share first: ``concept`` (filter index),
    ``share``, ``seqlets`` (how many), ``best_match`` / ``match_id`` / ``match_p`` / ``match_e``
    (JASPAR, TOMTOM statistics; name and id empty when ``match_e > max_e``), ``consensus``,
    ``reference_examples`` (ids). ``cwm`` and ``ppm``: ``(A, width)`` per reported filter.
    ``channel_relevance``: ``(N, C)`` for every filter. ``seqlet_table``: every conditional seqlet,
    with its filter in ``concept``.
    """

    layer: str
    alphabet: str
    frame: pd.DataFrame
    cwm: dict[int, np.ndarray]
    ppm: dict[int, np.ndarray]
    channel_relevance: np.ndarray
    ids: list[str]
    seqlet_table: pd.DataFrame = field(default_factory=pd.DataFrame)

    def describe(self, concept: int) -> str:
        """``"filter 17 carries CTCF (p=2e-07), 12.0% of the relevance"``."""
        row = self.frame.set_index("concept").loc[concept]
        match = f"carries {row.best_match} (E={row.match_e:.1g})" if row.best_match else "matches no motif"
        return f"filter {concept} {match}, {row.share:.1%} of the relevance"


def _conditional_seqlets(
    ids: list[str],
    sequences: list[str],
    onehot: torch.Tensor,
    conditional: torch.Tensor,
    alphabet: str,
    window: int,
    alpha: float,
) -> pd.DataFrame:
    observed = observed_relevance(onehot, conditional)
    view = SequenceExplanation(
        ids,
        sequences,
        onehot,
        torch.zeros(len(ids)),
        observed,
        observed,
        torch.zeros(len(ids)),
        torch.zeros(len(ids)),
        [onehot.shape[-1]] * len(ids),
        alphabet,
        "",
        conditional,
    )
    return call_seqlets(view, window=window, alpha=alpha)


def _aligned(
    seqlets: pd.DataFrame, index: dict[str, int], onehot: torch.Tensor, scores: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """CWM and PPM ``(A, width)`` over the seqlets, each re-centred on its strongest window."""
    length = onehot.shape[-1]
    if width > length:
        raise InputError(f"the CWM width {width} is longer than the sequences ({length})")
    cwm = np.zeros((onehot.shape[1], width))
    ppm = np.zeros_like(cwm)
    used = 0
    kernel = np.ones(width)
    for row in seqlets.itertuples():
        i = index[row.id]
        sums = np.convolve(scores[i], kernel, mode="valid")  # sums[s] = scores[s:s + width].sum()
        lo, hi = max(0, row.start - width + 1), min(len(sums), row.end)
        if lo >= hi:
            continue
        start = lo + int(np.argmax(sums[lo:hi]))
        window = onehot[i, :, start : start + width].double().numpy()
        cwm += window * scores[i][start : start + width][None, :]
        ppm += window
        used += 1
    if used:
        cwm /= used
        ppm /= used
    return cwm, ppm, used


#: A column enters a consensus when its strongest letter reaches this share of the strongest column's.
CONSENSUS_KEEP = 0.2


def consensus(matrix: np.ndarray, alphabet: str, keep: float = CONSENSUS_KEEP) -> str:
    """The strongest letter of each column of ``matrix`` ``(A, W)`` (a CWM, or centred filter
    weights), ``N`` where the column's strongest value is below ``keep`` times the strongest
    column's; leading and trailing ``N`` removed ("" when nothing is left)."""
    strength = matrix.max(axis=0)
    top = strength.max() if strength.size else 0.0
    if not top > 0:
        return ""
    letters = np.argmax(matrix, axis=0)
    text = "".join(alphabet[j] if value >= keep * top else "N" for j, value in zip(letters, strength))
    return text.strip("N")


def trimmed(ppm: np.ndarray, strength: np.ndarray, keep: float | None = None) -> np.ndarray:
    """``ppm``'s columns from the first to the last whose ``strength`` (e.g. the CWM's absolute
    column sum) reaches ``keep`` (default :data:`TRIM`) times the strongest column's."""
    keep = TRIM if keep is None else keep
    columns = np.flatnonzero(strength >= keep * strength.max()) if strength.max() > 0 else np.array([], dtype=int)
    return ppm[:, columns.min() : columns.max() + 1] if len(columns) else ppm[:, :0]


def match_ppms(
    ppms: Sequence[np.ndarray | None], alphabet: str, motifs: Any = "JASPAR2024", max_e: float = 0.05
) -> pd.DataFrame:
    """Best motif match (best_match, match_id, match_p, match_e) of each PPM (None or empty: no
    match tried)."""
    library = None if motifs is None else load_motifs(motifs)
    rows = []
    for ppm in ppms:
        if library is None or ppm is None or ppm.shape[1] == 0:
            rows.append({"best_match": "", "match_id": "", "match_p": np.nan, "match_e": np.nan})
            continue
        found = match_matrix(ppm, alphabet, library, max_e=max_e)
        rows.append(
            {
                "best_match": found["motif_name"],
                "match_id": found["motif_id"],
                "match_p": found["match_p"],
                "match_e": found["match_e"],
            }
        )
    return pd.DataFrame(rows, columns=["best_match", "match_id", "match_p", "match_e"])


def weights_to_ppm(weights: np.ndarray, factor: float = 4.0) -> np.ndarray:
    """A first-layer filter ``(A, W)`` as a PPM: weights scaled so the largest absolute one is
    ``factor``, exponentiated and normalised per column (Koo & Eddy 2019's convention)."""
    top = np.abs(weights).max()
    scaled = np.exp(weights / top * factor) if top > 0 else np.ones_like(weights)
    return scaled / scaled.sum(axis=0, keepdims=True)


def _encoded(
    explainer: SequenceExplainer, data: SequenceInput, ids: Sequence[str] | None
) -> tuple[list[str], list[str], torch.Tensor]:
    names, sequences, encoded = explainer._inputs(data, ids, "zeros", unique=True)
    lengths = sorted({t.shape[-1] for t in encoded})
    if len(lengths) != 1:
        raise InputError(
            f"filter concepts need sequences of one length; these have {lengths[:5]} (cut them to one "
            "window length first)"
        )
    dtype = model_dtype(explainer.model) or torch.get_default_dtype()
    return names, sequences, torch.stack(encoded).to(dtype)


def explain_filters(
    explainer: SequenceExplainer,
    data: SequenceInput,
    layer: str | None = None,
    target: Any = None,
    top: int | None = 10,
    width: int | None = None,
    motifs: Any = "JASPAR2024",
    examples: int = 5,
    batch_size: int = 64,
    window: int = 7,
    alpha: float = 0.01,
    max_e: float = 0.05,
    ids: Sequence[str] | None = None,
    channel_batch: int | None = None,
) -> FilterConcepts:
    """Filter concepts of ``layer`` (default: the first convolution) over the sequences ``data``
    (FASTA path, strings or one-hot; one length). ``top``: the filters with the largest share
    are described (None: all). ``width``: CWM width (default: the layer's kernel size, else
    :data:`DEFAULT_WIDTH`). ``motifs``: a JASPAR release, a motif file, or None (no matching).
    ``window``, ``alpha``: seqlet calling as in :func:`~lrp_domains.bio.motifs.seqlets.call_seqlets`."""
    model = explainer.model
    layer = layer or first_conv(model)
    modules = dict(model.named_modules())
    if layer not in modules:
        convs = [name for name, m in modules.items() if isinstance(m, nn.modules.conv._ConvNd)]
        raise InputError(f"--layer {layer}: the model has no module of that name; its convolutions: {convs[:8]}")
    if top is not None and top < 1:
        raise InputError(f"top must be >= 1 (or None for every filter), got {top}")
    if width is None:
        kernel = getattr(modules[layer], "kernel_size", None)
        kernel = kernel[0] if isinstance(kernel, (tuple, list)) else kernel
        width = int(kernel) if isinstance(kernel, int) and kernel > 1 else DEFAULT_WIDTH
    names, sequences, onehot = _encoded(explainer, data, ids)
    target = explainer.target if target is None else target
    options = dict(composite=explainer.composite, batch_size=batch_size, channel_batch=channel_batch)
    first = explain_concepts(model, onehot, layer, (), target, **options)
    channel_relevance = first.channel_relevance.double().cpu().numpy()
    totals = channel_relevance.sum(0)
    share = totals / totals.sum() if totals.sum() != 0 else np.zeros_like(totals)
    order = [int(c) for c in np.argsort(-share)][: top if top is not None else None]
    conditional = explain_concepts(model, onehot, layer, order, target, **options).conditional.cpu()
    index = {name: i for i, name in enumerate(names)}
    rows, cwms, ppms, tables = [], {}, {}, []
    for k, concept in enumerate(order):
        channels = conditional[:, k]
        seqlets = _conditional_seqlets(names, sequences, onehot.cpu(), channels, explainer.alphabet, window, alpha)
        scores = channels.sum(1).double().numpy()
        cwm, ppm, used = _aligned(seqlets, index, onehot.cpu(), scores, width)
        cwms[concept], ppms[concept] = cwm, ppm
        tables.append(seqlets.assign(concept=concept))
        strongest = np.argsort(-channel_relevance[:, concept])[:examples]
        rows.append(
            {
                "concept": concept,
                "share": float(share[concept]),
                "seqlets": used,
                "consensus": consensus(cwm, explainer.alphabet) if used else "",
                "reference_examples": ",".join(names[i] for i in strongest),
            }
        )
    frame = pd.DataFrame(rows, columns=["concept", "share", "seqlets", "consensus", "reference_examples"])
    best = match_ppms(
        [trimmed(ppms[c], np.abs(cwms[c]).sum(0)) if n else None for c, n in zip(order, frame["seqlets"])],
        explainer.alphabet,
        motifs,
        max_e,
    )
    frame = pd.concat(
        [frame[["concept", "share", "seqlets"]], best, frame[["consensus", "reference_examples"]]], axis=1
    )
    filled = [table for table in tables if len(table)]
    seqlet_table = pd.concat(filled, ignore_index=True) if filled else (tables[0] if tables else pd.DataFrame())
    return FilterConcepts(layer, explainer.alphabet, frame, cwms, ppms, channel_relevance, names, seqlet_table)


def filter_weight_matches(
    model: nn.Module, layer: str | None = None, alphabet: str = "ACGT", motifs: Any = "JASPAR2024", max_e: float = 0.05
) -> pd.DataFrame:
    """The common baseline: each filter of a first-layer convolution matched to JASPAR as a PPM
    (:func:`weights_to_ppm`). Columns: concept, consensus, best_match, match_id, match_p, match_e."""
    layer = layer or first_conv(model)
    module = dict(model.named_modules()).get(layer)
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() != 3 or weight.shape[1] != len(alphabet):
        raise InputError(f"layer {layer!r} is not a first-layer Conv1d over {len(alphabet)} letters")
    values = weight.detach().double().cpu().numpy()
    ppms = [weights_to_ppm(w) for w in values]
    frame = pd.DataFrame({"concept": range(len(values)), "consensus": [consensus(p - 0.25, alphabet) for p in ppms]})
    best = match_ppms(
        [trimmed(p, np.abs(w - w.mean(0, keepdims=True)).sum(0)) for p, w in zip(ppms, values)], alphabet, motifs, max_e
    )
    return pd.concat([frame, best], axis=1)
