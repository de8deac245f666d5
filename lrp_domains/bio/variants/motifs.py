"""The motif a variant breaks or makes: seqlets around the variant in both alleles' windows, named.

For each explained variant, seqlets (:func:`~lrp_domains.bio.call_seqlets`: windows whose
relevance stands out against a position-shuffled null) are called on its two windows together
(one null from both, so the threshold depends on this variant alone, never on which variants
share a batch). The strongest positive seqlet that overlaps the variant's bases (REF's in the
reference window, ALT's in the alternative one) is matched against a motif library (JASPAR by
default, :func:`~lrp_domains.bio.annotate_seqlets`: the best PSSM match with an exact p-value).

``motif_change`` asks what became of the reference's motif *at its site*: the reference motif
is scanned again over the same bases of the alternative window (the reference seqlet's span;
:func:`site_p_values`), because the strongest alternative seqlet may be the broken site itself,
best matched by a paralog's motif (a CTCF core broken reads as CTCFL):

- ``"lost"``: the reference motif no longer matches at its site (p above ``max_p``);
- ``"weakened"`` / ``"strengthened"``: it still matches, with a p-value 10 times larger / smaller;
- ``"changed"``: it matches about as well, and the alternative window's strongest seqlet at the
  variant names another motif;
- ``"gained"``: no motif named in the reference window, one in the alternative window;
- ``"kept"``: the reference motif still matches at its site about as well (within a factor 10 of
  its p-value), and the alternative window names the same motif or none;
- ``"none"``: no motif named in either window.

These are all the values of an explained variant (status ``"ok"``); the column is empty only for
variants that were not explained (another status) and for runs without a motif library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: The motif columns :func:`~lrp_domains.bio.explain_variants` adds.
MOTIF_COLUMNS = ("ref_motif", "ref_motif_p", "alt_motif", "alt_motif_p", "motif_change")
#: A match is named when its p-value is at most this (annotate_seqlets' default).
MAX_P = 1e-3
#: Every value of ``motif_change`` for an explained variant (module docstring).
MOTIF_CHANGES = ("lost", "weakened", "strengthened", "changed", "gained", "kept", "none")


@dataclass
class AlleleWindows:
    """The two windows of one variant as :func:`~lrp_domains.bio.call_seqlets` reads them:
    ``per_position`` ``(2, L)`` relevance (reference first), the sequences, and where the variant's
    bases are in each window (``spans``: ``[(start, end), (start, end)]``)."""

    ids: list[str]
    sequences: list[str]
    per_position: Any
    spans: list[tuple[int, int]]

    @property
    def lengths(self) -> list[int]:
        return [len(sequence) for sequence in self.sequences]


def strongest_overlapping(seqlets: pd.DataFrame, name: str, span: tuple[int, int]) -> pd.Series | None:
    """The positive seqlet of record ``name`` with the largest relevance among those overlapping
    ``span`` (``[start, end)``), or None."""
    if not len(seqlets):
        return None
    mine = seqlets[
        (seqlets["id"] == name)
        & (seqlets["sign"] == "positive")
        & (seqlets["start"] < span[1])
        & (seqlets["end"] > span[0])
    ]
    if not len(mine):
        return None
    return mine.sort_values("relevance", ascending=False).iloc[0]


def motif_change(ref_motif: str, ref_p: float, site_p: float, alt_motif: str, max_p: float = MAX_P) -> str:
    """What became of the reference motif (module docstring): ``ref_p`` its p-value in the reference
    window, ``site_p`` the same motif's p-value over the same bases of the alternative window,
    ``alt_motif`` the alternative window's named motif."""
    if not ref_motif:
        return "gained" if alt_motif else "none"
    if not site_p <= max_p:  # NaN too: nothing left to match at the site
        return "lost"
    if math.isfinite(ref_p):
        # exact p-values of perfect matches can be 0.0 (below double precision): floor them
        ratio = math.log10(max(site_p, 1e-300) / max(ref_p, 1e-300))
        if ratio >= 1:
            return "weakened"
        if ratio <= -1:
            return "strengthened"
    return "changed" if alt_motif and alt_motif != ref_motif else "kept"


def site_p_values(sites: pd.DataFrame, library: list, motifs: Any = None) -> list[float]:
    """The p-value of each row's motif (``motif_id``, from ``library``) at its best placement on
    the row's ``sequence``, both strands (the same PSSM scan and exact p-value as
    :func:`~lrp_domains.bio.annotate_seqlets`)."""
    from lrp_domains.bio.motifs.seqlets import annotate_seqlets

    by_id = {getattr(motif, "matrix_id", None) or motif.name: motif for motif in library}
    found = [math.nan] * len(sites)
    for motif_id, group in sites.groupby("motif_id", sort=False):
        scanned = annotate_seqlets(group[["sequence"]], motifs=[by_id[motif_id]], max_p=1.0, candidates=1)
        for position, p_value in zip(group.index, scanned["match_p"]):
            found[sites.index.get_loc(position)] = float(p_value)
    return found


def variant_motifs(
    pairs: Sequence[AlleleWindows], motifs: Any = "JASPAR2024", max_p: float = MAX_P, seed: int = 0
) -> list[dict[str, Any]]:
    """The motif columns (:data:`MOTIF_COLUMNS`) of each variant: per variant, seqlets on its two
    windows, the strongest one overlapping the variant in each, both matched against ``motifs`` in
    one scan (a JASPAR release, a JASPAR/MEME file or Biopython motifs). Names are empty and
    p-values NaN where no seqlet overlaps the variant or its best match has ``p > max_p``."""
    from lrp_domains.bio.motifs.seqlets import annotate_seqlets, call_seqlets, load_motifs

    library = load_motifs(motifs)
    chosen: list[tuple[int, int, pd.Series]] = []
    for k, pair in enumerate(pairs):
        seqlets = call_seqlets(pair, seed=seed)
        for side in (0, 1):
            best = strongest_overlapping(seqlets, pair.ids[side], pair.spans[side])
            if best is not None:
                chosen.append((k, side, best))
    names = [["", ""] for _ in pairs]
    p_values = [[math.nan, math.nan] for _ in pairs]
    site_p = [math.nan for _ in pairs]
    if chosen:
        frame = pd.DataFrame([best for _, _, best in chosen]).reset_index(drop=True)
        annotated = annotate_seqlets(frame, motifs=library, max_p=max_p)
        sites = []
        for (k, side, best), (_, match) in zip(chosen, annotated.iterrows()):
            name = str(match["motif_name"] or "")
            if name:
                names[k][side] = name
                p_values[k][side] = float(match["match_p"])
                if side == 0:  # the reference motif, over the same bases of the alternative window
                    sequence = pairs[k].sequences[1][int(best["start"]) : int(best["end"])]
                    sites.append({"k": k, "motif_id": match["motif_id"], "sequence": sequence})
        if sites:
            frame = pd.DataFrame(sites)
            for k, p_value in zip(frame["k"], site_p_values(frame, library)):
                site_p[k] = p_value
    return [
        {
            "ref_motif": name[0],
            "ref_motif_p": p[0],
            "alt_motif": name[1],
            "alt_motif_p": p[1],
            "motif_change": motif_change(name[0], p[0], site, name[1], max_p),
        }
        for name, p, site in zip(names, p_values, site_p)
    ]


def allele_windows(
    ref_per_position: np.ndarray,
    alt_per_position: np.ndarray,
    ref: str,
    alt: str,
    center: int,
    ref_allele: str,
    alt_allele: str,
) -> AlleleWindows:
    """One variant's two windows for :func:`variant_motifs` (relevance per position of each window,
    the windows' sequences, the variant's first base at ``center``)."""
    import torch

    per_position = torch.as_tensor(np.stack([ref_per_position, alt_per_position]), dtype=torch.float64)
    return AlleleWindows(
        ["ref", "alt"],
        [ref, alt],
        per_position,
        [(center, center + len(ref_allele)), (center, center + len(alt_allele))],
    )
