"""Cells as sentences of gene tokens: rank value encoding (Geneformer) and binned values (scGPT).

Geneformer (Theodoris et al., Nature 2023, "Transfer learning enables predictions in network
biology", Methods: "rank value encoding") writes a cell as its expressed genes ordered by
expression, highest first, after normalising each gene by its median nonzero expression over the
training cells: a gene that is always high (housekeeping, ribosomal) moves down, a gene that is
rarely but strongly expressed in this cell (a marker, a transcription factor) moves up. Genes
that are not expressed are not in the sentence. Here the sentence starts with ``[CLS]`` (whose
final state the classifier reads, as Geneformer v2 does) and is padded on the right.

scGPT (Cui et al., Nature Methods 2024, Methods: "value binning") adds to each gene token an
embedding of its expression value, binned per cell into ``n_bins`` equal-frequency bins of the
cell's nonzero values, so bins mean the same relative level in deep and shallow cells. Bin ids run
from 1 (lowest) to ``n_bins``; 0 is for ``[CLS]`` and padding.

Input is non-negative expression (normalised counts or their ``log1p``: the ranking divides by
medians, so pass the same kind of values for training and explaining; see
:func:`lrp_domains.bio.cells.gene_transformer.expression_matrix` for ``pbmc68k_reduced``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from lrp_domains.errors import InputError

#: Special tokens, in id order: padding, the classification token, and a mask (for deletion tests).
SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[MASK]")


@dataclass
class GeneVocabulary:
    """Genes <-> token ids, with each gene's median nonzero expression over the training cells.

    Ids 0, 1, 2 are ``[PAD]``, ``[CLS]``, ``[MASK]``; gene ``i`` of ``genes`` has id ``i + 3``.
    ``medians`` (one per gene, > 0) are the Geneformer normalisation factors; 1 where unknown.
    """

    genes: list[str]
    medians: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.genes = [str(g) for g in self.genes]
        if not self.genes:
            raise InputError("a gene vocabulary needs at least one gene")
        seen: set[str] = set()
        twice = sorted({g for g in self.genes if g in seen or seen.add(g)})
        if twice:
            raise InputError(f"the gene list names {len(twice)} genes twice ({', '.join(twice[:8])}); make them unique")
        medians = np.ones(len(self.genes)) if self.medians is None else np.asarray(self.medians, dtype=np.float64)
        if medians.shape != (len(self.genes),) or not np.all(np.isfinite(medians)) or np.any(medians <= 0):
            raise InputError(f"medians must be {len(self.genes)} positive finite numbers, one per gene")
        self.medians = medians
        self._ids = {g: i + len(SPECIAL_TOKENS) for i, g in enumerate(self.genes)}

    pad_id: ClassVar[int] = 0
    cls_id: ClassVar[int] = 1
    mask_id: ClassVar[int] = 2

    def __len__(self) -> int:
        """Number of token ids (special tokens included)."""
        return len(self.genes) + len(SPECIAL_TOKENS)

    def __contains__(self, gene: object) -> bool:
        """Whether ``gene`` has a token."""
        return str(gene) in self._ids

    def id_of(self, gene: str) -> int:
        """The token id of ``gene`` (an InputError for a gene outside the vocabulary)."""
        try:
            return self._ids[str(gene)]
        except KeyError:
            raise InputError(f"gene {gene!r} is not in the vocabulary of {len(self.genes)} genes") from None

    def gene_of(self, token_id: int) -> str | None:
        """The gene of a token id; None for special tokens."""
        index = int(token_id) - len(SPECIAL_TOKENS)
        return self.genes[index] if 0 <= index < len(self.genes) else None

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """Names of token ids: genes, or the special tokens' names."""
        return [self.gene_of(i) or SPECIAL_TOKENS[int(i)] for i in ids]

    def to_dict(self) -> dict:
        """JSON-ready: genes and medians."""
        return {"genes": list(self.genes), "medians": self.medians.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> GeneVocabulary:
        """The inverse of :meth:`to_dict`."""
        return cls(list(data["genes"]), np.asarray(data["medians"], dtype=np.float64))

    @classmethod
    def fit(cls, expression: np.ndarray, genes: Sequence[str]) -> GeneVocabulary:
        """A vocabulary with Geneformer's normalisation factors: each gene's median nonzero
        expression over the (training) cells ``expression`` (cells x genes); 1 for genes never
        expressed there."""
        values = _non_negative(expression, len(genes))
        medians = np.ones(values.shape[1])
        for j in range(values.shape[1]):
            nonzero = values[:, j][values[:, j] > 0]
            if nonzero.size:
                medians[j] = float(np.median(nonzero))
        return cls(list(genes), medians)


@dataclass
class CellSentences:
    """Padded cell sentences: ``input_ids`` and ``attention_mask`` ``(N, T)`` (``[CLS]`` first),
    ``value_ids`` (binned values, 0 for ``[CLS]``/padding) or None, ``truncated`` (expressed genes
    left out per cell because of ``max_genes``)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    value_ids: torch.Tensor | None
    truncated: np.ndarray

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def model_inputs(self, start: int = 0, stop: int | None = None) -> dict[str, torch.Tensor]:
        """Keyword inputs of the cells ``start:stop``, trimmed to their longest sentence."""
        stop = len(self) if stop is None else stop
        mask = self.attention_mask[start:stop]
        width = int(mask.sum(1).max())
        inputs = {"input_ids": self.input_ids[start:stop, :width], "attention_mask": mask[:, :width]}
        if self.value_ids is not None:
            inputs["value_ids"] = self.value_ids[start:stop, :width]
        return inputs


def cell_sentences(
    expression: np.ndarray,
    genes: Sequence[str] | GeneVocabulary,
    max_genes: int | None = 256,
    values: bool = False,
    n_bins: int = 16,
    cells: Sequence[str] | None = None,
) -> CellSentences:
    """Each cell (row of ``expression``, non-negative, columns = ``genes``) as gene token ids
    ranked by expression normalised by each gene's median nonzero expression (Geneformer's rank
    value encoding), ``[CLS]`` first, at most ``max_genes`` genes (None: all expressed genes),
    right-padded. Ties are broken by the vocabulary's gene order.

    ``genes``: a :class:`GeneVocabulary` (ids and the training medians), or gene names (a
    vocabulary is fitted on ``expression`` itself). ``values=True`` adds scGPT-style per-cell
    value bins (``n_bins`` equal-frequency bins of the cell's nonzero values). ``cells`` name the
    rows in error messages. A cell without any expressed gene is an :class:`InputError`.
    """
    vocab = genes if isinstance(genes, GeneVocabulary) else GeneVocabulary.fit(expression, genes)
    data = _non_negative(expression, len(vocab.genes))
    if max_genes is not None and max_genes < 1:
        raise InputError(f"max_genes must be at least 1 (or None for every expressed gene), got {max_genes}")
    if n_bins < 1:
        raise InputError(f"n_bins must be at least 1, got {n_bins}")
    normalised = data / vocab.medians[None, :]
    expressed = (data > 0).sum(1)
    empty = np.flatnonzero(expressed == 0)
    if empty.size:
        names = [str(cells[i]) if cells is not None else f"row {i}" for i in empty[:8]]
        raise InputError(
            f"{empty.size} cells express none of the vocabulary's genes ({', '.join(names)}); "
            "drop empty cells, or check that the data holds expression (not z-scores) of these genes"
        )
    longest = int(expressed.max()) if max_genes is None else min(int(expressed.max()), max_genes)
    n = data.shape[0]
    ids = np.zeros((n, longest + 1), dtype=np.int64)
    mask = np.zeros_like(ids)
    bins = np.zeros_like(ids)
    ids[:, 0], mask[:, 0] = vocab.cls_id, 1
    for row in range(n):
        order = np.argsort(-normalised[row], kind="stable")[: expressed[row]][:longest]
        ids[row, 1 : len(order) + 1] = order + len(SPECIAL_TOKENS)
        mask[row, : len(order) + 1] = 1
        if values:
            bins[row, 1 : len(order) + 1] = value_bins(data[row], n_bins)[order]
    truncated = expressed - np.minimum(expressed, longest)
    return CellSentences(
        torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(bins) if values else None, truncated
    )


def value_bins(row: np.ndarray, n_bins: int) -> np.ndarray:
    """scGPT's value binning of one cell: nonzero values into ``n_bins`` equal-frequency bins of
    this cell's nonzero values (ids 1..``n_bins``, higher is more); zeros get 0."""
    bins = np.zeros(row.shape, dtype=np.int64)
    nonzero = row > 0
    if not nonzero.any():
        return bins
    edges = np.quantile(row[nonzero], np.linspace(0, 1, n_bins + 1)[1:-1])
    bins[nonzero] = np.digitize(row[nonzero], edges, right=True) + 1
    return bins


def _non_negative(expression: np.ndarray, n_genes: int) -> np.ndarray:
    """``expression`` as a float64 cells x genes array; InputErrors for shape, NaN and negative values."""
    data = expression.toarray() if hasattr(expression, "toarray") else np.asarray(expression)
    data = data.astype(np.float64)
    if data.ndim != 2 or data.shape[1] != n_genes:
        raise InputError(
            f"expression must be cells x genes with {n_genes} genes (the vocabulary's order), got shape {data.shape}"
        )
    if not np.all(np.isfinite(data)):
        raise InputError("expression holds NaN or infinite values; fix or drop those cells")
    if (data < 0).any():
        raise InputError(
            "expression has negative values: gene tokens rank non-negative expression (counts, "
            "normalised counts or log1p); z-scaled data has lost its zeros: use adata.raw or counts"
        )
    return data
