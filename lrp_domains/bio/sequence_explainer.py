"""Nucleotide relevance for one-hot sequence models.

:class:`SequenceExplainer` takes sequences (strings), a one-hot tensor ``(N, A, L)`` or a FASTA
path, explains one output per sequence in one forward and one backward pass per batch, and
returns a :class:`SequenceExplanation` with the relevance the observed bases received, the
hypothetical contribution of every base at every position (what tfmodisco reads), and
per-position sums. Sequences of different lengths are explained in groups of equal length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from torch import nn

from lrp_domains.bio.sequences import DNA, decode, one_hot, read_fasta, reverse_complement
from lrp_domains.core.attribution import explain, resolve_composite
from lrp_domains.core.composite import Composite

if TYPE_CHECKING:
    import pandas as pd

SequenceInput = Union[str, Path, Sequence[str], torch.Tensor]
SequenceTarget = Union[None, int, Sequence[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class SequenceExplanation:
    """Relevance of each base of each sequence.

    ``relevance`` (N, A, L): what the observed bases received (0 elsewhere, and beyond each
    sequence's length); ``hypothetical`` (N, A, L): what each base would receive at each position
    if it were there; ``per_position`` (N, L) = ``relevance`` summed over the alphabet; ``output``
    the model output; ``explained`` the explained value per sequence; ``delta`` explained minus
    summed relevance; ``lengths`` per sequence.
    """

    ids: list[str]
    sequences: list[str]
    onehot: torch.Tensor
    output: torch.Tensor
    relevance: torch.Tensor
    hypothetical: torch.Tensor
    explained: torch.Tensor
    delta: torch.Tensor
    lengths: list[int]
    alphabet: str = DNA
    composite: str = ""

    @property
    def per_position(self) -> torch.Tensor:
        """Relevance per position, ``(N, L)``."""
        return self.relevance.sum(1)

    def __len__(self) -> int:
        return len(self.ids)

    def to_frame(self) -> pd.DataFrame:
        """Long table: id, position (0-based), base, relevance (observed bases only)."""
        import pandas as pd

        rows = []
        for i, (name, sequence) in enumerate(zip(self.ids, self.sequences)):
            values = self.per_position[i, : self.lengths[i]].tolist()
            rows.append(pd.DataFrame({"id": name, "position": np.arange(len(values)),
                                      "base": list(sequence[: len(values)]), "relevance": values}))
        return pd.concat(rows, ignore_index=True)

    def gene_table(self, seqlets: pd.DataFrame | None = None, top: int = 3) -> pd.DataFrame:
        """One row per record (each record one gene's promoter or enhancer, its id the gene):
        prediction (the explained value), total relevance, and the top seqlets with their best
        motif match when ``seqlets`` (from :func:`call_seqlets`, optionally annotated) are given."""
        import pandas as pd

        rows = []
        for i, name in enumerate(self.ids):
            row = {"gene": name, "explained": float(self.explained[i]), "total_relevance":
                   float(self.relevance[i].sum()), "delta": float(self.delta[i])}
            if seqlets is not None and len(seqlets):
                mine = seqlets[seqlets["id"] == name].sort_values("relevance", ascending=False).head(top)
                row["top_seqlets"] = "; ".join(
                    f"{r.start}-{r.end}" + (f" {r.motif_name} ({r.motif_id})" if "motif_name" in mine and
                                            isinstance(getattr(r, "motif_name", None), str) else "")
                    for r in mine.itertuples())
            rows.append(row)
        return pd.DataFrame(rows)


class SequenceExplainer:
    """Explain a one-hot sequence model base by base.

    Parameters
    ----------
    model:
        Maps ``(N, A, L)`` one-hot sequences to outputs; explained in eval mode, returned unchanged.
    alphabet:
        Base order of the one-hot axis (``"ACGT"``; ``"ACGU"`` for RNA).
    composite:
        ``"genomics"`` (default: z-box input layer for one-hot bounds [0, 1], and the conv/dense
        rules chosen on the synthetic benchmark, see the README) or any composite.
    target:
        Default output index or callable, used when :meth:`explain` gets none.
    """

    def __init__(self, model: nn.Module, alphabet: str = DNA, composite: str | Composite = "genomics",
                 target: SequenceTarget = None) -> None:
        self.model = model
        self.alphabet = alphabet.upper()
        self.composite = resolve_composite(composite)
        self.target = target

    @classmethod
    def default(cls, composite: str | Composite = "genomics") -> SequenceExplainer:
        """The default CNN trained on the synthetic planted-motif benchmark."""
        from lrp_domains.bio.sequence_model import load_default_sequence_model

        return cls(load_default_sequence_model(), composite=composite)

    def _inputs(self, data: SequenceInput, ids: Sequence[str] | None, n: str) -> tuple[list[str], list[str],
                                                                                       list[torch.Tensor]]:
        if isinstance(data, (str, Path)) and Path(str(data)).suffix.lower() in (".fa", ".fasta", ".fna", ".gz") \
                and Path(str(data)).exists():
            names, sequences = read_fasta(data)
        elif isinstance(data, torch.Tensor):
            if data.dim() != 3 or data.shape[1] != len(self.alphabet):
                raise ValueError(f"one-hot input must be (N, {len(self.alphabet)}, L), got shape {tuple(data.shape)}")
            sequences = decode(data, self.alphabet)
            names = list(ids) if ids is not None else [f"seq{i}" for i in range(len(sequences))]
            return names, sequences, [t for t in data]
        else:
            sequences = [data] if isinstance(data, str) else list(data)
            names = list(ids) if ids is not None else [f"seq{i}" for i in range(len(sequences))]
        if len(names) != len(sequences):
            raise ValueError(f"got {len(names)} ids for {len(sequences)} sequences")
        encoded = [one_hot(s, self.alphabet, n=n, ids=[name])[0] for name, s in zip(names, sequences)]
        return names, sequences, encoded

    def explain(self, data: SequenceInput, target: SequenceTarget = None, batch_size: int = 64,
                progress: bool = False, center: bool = False, rc_average: bool = False,
                ids: Sequence[str] | None = None, n: str = "zeros") -> SequenceExplanation:
        """Relevance of every base for one output per sequence.

        ``center``: the off-simplex correction (Majdandzic et al. 2023): the hypothetical map minus
        its mean over the alphabet, then projected on the observed bases. ``rc_average``: explain
        each sequence and its reverse complement and average the two, mapped back.
        ``target``: an output index, one per sequence, or a callable on the output (e.g. a profile
        head). Relevance is seeded with the explained value itself, so its sign follows it.
        """
        names, sequences, encoded = self._inputs(data, ids, n)
        target = self.target if target is None else target
        dtype = next(self.model.parameters()).dtype
        lengths = [t.shape[-1] for t in encoded]
        width = max(lengths)
        count = len(encoded)
        onehot = torch.zeros((count, len(self.alphabet), width), dtype=dtype)
        relevance, hypothetical = torch.zeros_like(onehot), torch.zeros_like(onehot)
        explained = torch.zeros(count, dtype=torch.float64)
        outputs: dict[int, torch.Tensor] = {}
        for length in sorted(set(lengths)):
            rows = [i for i, value in enumerate(lengths) if value == length]
            batch = torch.stack([encoded[i] for i in rows]).to(dtype)
            group_target = _subset(target, rows)
            forward = self._explain(batch, group_target, batch_size, progress)
            if rc_average:
                if len(self.alphabet) != 4:
                    raise ValueError("rc_average needs a 4-letter alphabet in complementary order (ACGT or ACGU)")
                backward = self._explain(reverse_complement(batch), group_target, batch_size, progress)
                units = (forward.hypothetical + reverse_complement(backward.hypothetical)) / 2
                values = (forward.relevance + reverse_complement(backward.relevance)) / 2
                value = (forward.explained + backward.explained) / 2
            else:
                units, values, value = forward.hypothetical, forward.relevance, forward.explained
            if center:
                units = units - units.mean(1, keepdim=True)
                values = batch * units
            for k, i in enumerate(rows):
                onehot[i, :, :length] = batch[k]
                relevance[i, :, :length] = values[k]
                hypothetical[i, :, :length] = units[k]
                explained[i] = float(value[k])
                outputs[i] = forward.output[k]
        output = torch.stack([outputs[i] for i in range(count)]) if len(set(o.shape for o in outputs.values())) == 1 \
            else [outputs[i] for i in range(count)]
        delta = explained - relevance.reshape(count, -1).sum(1).double()
        return SequenceExplanation(names, sequences, onehot, output, relevance, hypothetical, explained, delta,
                                   lengths, self.alphabet, self.composite.name)

    def _explain(self, batch: torch.Tensor, target: Any, batch_size: int, progress: bool):
        return explain(self.model, batch, target=target, composite=self.composite, batch_size=batch_size,
                       progress=progress, hypothetical=True)


def _subset(target: Any, rows: list[int]) -> Any:
    if target is None or callable(target) or isinstance(target, int):
        return target
    values = target.tolist() if isinstance(target, torch.Tensor) else list(target)
    return [values[i] for i in rows]
