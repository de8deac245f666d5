"""Relevance per letter for one-hot sequence models (DNA, RNA, protein).

:class:`SequenceExplainer` takes sequences (strings), a one-hot tensor ``(N, A, L)`` or a FASTA
path, explains one output per sequence in one forward and one backward pass per batch, and
returns a :class:`SequenceExplanation`. Sequences of different lengths are explained in groups of
equal length (:meth:`SequenceExplainer.explain_groups` returns the groups without any padding).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Union

import numpy as np
import torch
from torch import nn

from lrp_domains.bio.architectures.layouts import Architecture, SequenceModel, architecture_of
from lrp_domains.bio.sequences.onehot import DNA, decode, one_hot, reverse_complement
from lrp_domains.bio.sequences.targets import GenomicTarget, TrackTarget, head_output, parse_sequence_target
from lrp_domains.core.composite import Composite
from lrp_domains.core.engine.attribution import explain, model_dtype, resolve_composite
from lrp_domains.core.engine.coverage import LRPCoverageError
from lrp_domains.core.engine.ledger import LedgerRows
from lrp_domains.domains import DomainExplainer, Reader
from lrp_domains.errors import InputError
from lrp_domains.files.fasta import FORMATS as FASTA_FORMATS
from lrp_domains.files.fasta import FastaRecords, check_unique, read_fasta
from lrp_domains.options import Option

if TYPE_CHECKING:
    import pandas as pd

SequenceInput = Union[str, Path, Sequence[str], torch.Tensor]
SequenceTarget = Union[None, int, Sequence[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class SequenceExplanation:
    """Relevance of each letter of each sequence.

    ``relevance`` (N, A, L): the relevance of the *observed* letter at each position: the
    position's total (all channels of the input layer summed) placed on the observed letter, 0 on
    every other letter (and beyond each sequence's length); ``channel_relevance`` (N, A, L): what
    the input layer gave each channel, absent letters included (z-box on one-hot inputs gives
    the absent bases relevance too; ``x * g`` rules give them none); ``hypothetical`` (N, A, L):
    what each letter would receive at each position if it were there (tfmodisco's input);
    ``per_position`` (N, L): ``channel_relevance`` summed over the alphabet (equal to
    ``relevance`` summed, except at unknown positions, which have no observed letter);
    ``explained`` the explained value per sequence; ``delta`` explained minus summed relevance
    (what biases and stabilizers absorbed); ``lengths`` per sequence.
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
    channel_relevance: torch.Tensor | None = None
    #: Per record, the relevance of each channel of a layer (runs with the ``concepts`` option).
    concepts: list[list[float]] | None = None
    #: With ``explain(..., ledger=True)``: where ``delta`` went, per record (:attr:`ledger`).
    ledger_rows: LedgerRows | None = None

    @property
    def ledger(self) -> pd.DataFrame:
        """Where the relevance went: per record and module, what the module absorbed (see
        :attr:`lrp_domains.core.engine.result.Explanation.ledger`); ``example`` indexes the records."""
        if self.ledger_rows is None:
            raise ValueError("this explanation has no ledger: explain with ledger=True")
        return self.ledger_rows.to_frame()

    @property
    def per_position(self) -> torch.Tensor:
        """Relevance per position, ``(N, L)``: every channel of the input layer summed."""
        source = self.channel_relevance if self.channel_relevance is not None else self.relevance
        return source.sum(1)

    def __len__(self) -> int:
        return len(self.ids)

    def to_frame(self) -> pd.DataFrame:
        """Long table: id, position (0-based), letter, relevance (per position; no padding)."""
        import pandas as pd

        per_position = self.per_position
        rows = []
        for i, (name, sequence) in enumerate(zip(self.ids, self.sequences)):
            values = per_position[i, : self.lengths[i]].tolist()
            rows.append(
                pd.DataFrame(
                    {
                        "id": name,
                        "position": np.arange(len(values)),
                        "base": list(sequence[: len(values)]),
                        "relevance": values,
                    }
                )
            )
        return pd.concat(rows, ignore_index=True)

    def by_length(self) -> list[SequenceExplanation]:
        """The records grouped by length, shortest first, each group without padding."""
        if len(set(self.lengths)) == 1 and self.onehot.shape[-1] == self.lengths[0]:
            return [self]
        groups = []
        for length in sorted(set(self.lengths)):
            rows = [i for i, n in enumerate(self.lengths) if n == length]
            index = torch.tensor(rows)

            def take(values: torch.Tensor | None, length: int = length, index: torch.Tensor = index) -> torch.Tensor:
                return None if values is None else values[index][..., :length]

            output = self.output[index] if isinstance(self.output, torch.Tensor) else [self.output[i] for i in rows]
            groups.append(
                SequenceExplanation(
                    [self.ids[i] for i in rows],
                    [self.sequences[i] for i in rows],
                    take(self.onehot),
                    output,
                    take(self.relevance),
                    take(self.hypothetical),
                    self.explained[index],
                    self.delta[index],
                    [length] * len(rows),
                    self.alphabet,
                    self.composite,
                    take(self.channel_relevance),
                    ledger_rows=None if self.ledger_rows is None else self.ledger_rows.subset(rows),
                )
            )
        return groups

    def gene_table(self, seqlets: pd.DataFrame | None = None, top: int = 3) -> pd.DataFrame:
        """One row per record (each record one gene's promoter or enhancer, its id the gene):
        prediction (the explained value), total relevance, and the top seqlets with their best
        motif match when ``seqlets`` (from :func:`call_seqlets`, optionally annotated) are given."""
        import pandas as pd

        rows = []
        for i, name in enumerate(self.ids):
            row = {
                "gene": name,
                "explained": float(self.explained[i]),
                "total_relevance": float(self.per_position[i].sum()),
                "delta": float(self.delta[i]),
            }
            if seqlets is not None and len(seqlets):
                mine = seqlets[seqlets["id"] == name].sort_values("relevance", ascending=False).head(top)
                row["top_seqlets"] = "; ".join(
                    f"{r.start}-{r.end}"
                    + (
                        f" {r.motif_name} ({r.motif_id})"
                        if "motif_name" in mine and isinstance(getattr(r, "motif_name", None), str)
                        else ""
                    )
                    for r in mine.itertuples()
                )
            rows.append(row)
        return pd.DataFrame(rows)


def observed_relevance(onehot: torch.Tensor, channel_relevance: torch.Tensor) -> torch.Tensor:
    """Each position's total relevance placed on its observed letter(s) (split by the one-hot's
    weights where a position is uniform), 0 elsewhere."""
    weight = onehot.sum(1, keepdim=True)
    share = torch.where(weight > 0, onehot / weight.clamp_min(torch.finfo(onehot.dtype).tiny), torch.zeros_like(onehot))
    return share * channel_relevance.sum(1, keepdim=True)


def _looks_like_path(data: object) -> bool:
    if isinstance(data, Path):
        return True
    if not isinstance(data, str):
        return False
    name = data.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return os.path.exists(data) or name.endswith(FASTA_FORMATS) or "/" in data or os.sep in data


class SequenceExplainer(DomainExplainer):
    """Explain a one-hot sequence model letter by letter.

    Parameters
    ----------
    model:
        Maps ``(N, A, L)`` one-hot sequences to outputs; explained in eval mode, returned unchanged.
    alphabet:
        Letter order of the one-hot axis (``"ACGT"``; ``"ACGU"`` for RNA;
        :data:`~lrp_domains.bio.sequences.onehot.PROTEIN` for proteins).
    composite:
        ``"genomics"`` (default: z-box input layer for one-hot bounds [0, 1], and the conv/dense
        rules chosen on the synthetic benchmark, see the README) or any composite.
    target:
        Default output index or callable, used when :meth:`explain` gets none: e.g.
        :func:`~lrp_domains.bio.sequences.targets.profile_target`, ``counts_target``,
        ``track_target`` (they pick their own head of a tuple/dict output), or text as the CLI takes
        it (``"profile"``, ``"counts"``, ``"track=12:400-420"``, see
        :func:`~lrp_domains.bio.sequences.targets.parse_sequence_target`).
    layout:
        The model's input layout: ``"NCL"`` (one-hot ``(N, A, L)``) or ``"NLC"`` (``(N, L, A)``);
        default: recognised from the model (Enformer takes ``"NLC"``; bpnet-lite's BPNet/ChromBPNet
        and Borzoi ``"NCL"``; see :func:`~lrp_domains.bio.architectures.layouts.architecture_of`). Inputs
        and results are ``(N, A, L)`` either way. BPNet models with control tracks get all-zero
        controls (as bpnet-lite's ``ControlWrapper``).
    head:
        Which output of a model returning a tuple or dict is explained by index targets (e.g.
        ``head="human"`` for Enformer); the genomic targets carry their own.
    strict:
        Raise :class:`~lrp_domains.core.engine.coverage.LRPCoverageError` naming every operation of the
        model that no rule covers, instead of warning.
    """

    kind: ClassVar[str] = "sequences"
    item: ClassVar[str] = "record"
    default_composite: ClassVar[str] = "genomics"
    run_options: ClassVar[dict[str, Any]] = {
        "target": None,
        "batch_size": 64,
        "center": False,
        "rc_average": False,
        "concepts": None,
        "ledger": False,
    }
    option_types: ClassVar[dict[str, Option]] = {"concepts": Option("text")}
    columns: ClassVar[tuple[str, ...]] = (
        "explained",
        "delta",
        "sequence",
        "relevance",
        "hypothetical",
        "concepts",
        "ledger",
    )
    report: ClassVar[str] = "lrp_domains.report.sequences:write_sequence_report"

    def __init__(
        self,
        model: nn.Module,
        alphabet: str = DNA,
        composite: str | Composite = "genomics",
        target: SequenceTarget | str = None,
        *,
        layout: str | None = None,
        head: int | str | None = None,
        strict: bool = False,
    ) -> None:
        self.model = model
        self.alphabet = alphabet.upper()
        self.composite = resolve_composite(composite)
        self.target = parse_sequence_target(target) if isinstance(target, str) else target
        self.architecture = architecture_of(model, layout)
        self.head = head
        self.strict = strict
        #: What the explanation runs: the model itself, or it wrapped to take (N, A, L) sequences.
        self.runner: nn.Module = model if self.architecture.plain else SequenceModel(model, self.architecture)

    @classmethod
    def default(cls, composite: str | Composite = "genomics") -> SequenceExplainer:
        """The default CNN trained on the synthetic planted-motif benchmark."""
        from lrp_domains.bio.sequences.synthetic_cnn import load_default_sequence_model

        return cls(load_default_sequence_model(), composite=composite)

    @classmethod
    def from_options(
        cls, model: str | None = None, weights: str | None = None, composite: str | None = None
    ) -> SequenceExplainer:
        """The default CNN, ``MODULE:FACTORY`` with safetensors ``weights``, or a bpnet-lite model
        saved with ``torch.save`` (``model.torch`` or ``.pt``, see
        :func:`~lrp_domains.models.load_saved_module`; it holds its weights)."""
        if model is None:
            if weights is not None:
                raise InputError("--weights needs --model MODULE:FACTORY (the default model has its own weights)")
            return cls.default(composite=composite or cls.default_composite)
        from lrp_domains.models import is_saved_module, load_saved_module, load_user_model

        if is_saved_module(model):
            if weights is not None:
                raise InputError(
                    f"--weights is for MODULE:FACTORY models; --model {Path(model).name} holds its "
                    "weights (saved with torch.save): drop --weights"
                )
            return cls(load_saved_module(model), composite=composite or cls.default_composite)
        return cls(load_user_model(model, weights).model, composite=composite or cls.default_composite)

    # -- inputs -----------------------------------------------------------------------------
    def _inputs(
        self, data: SequenceInput, ids: Sequence[str] | None, n: str, unique: bool
    ) -> tuple[list[str], list[str], list[torch.Tensor]]:
        if isinstance(data, torch.Tensor):
            if data.dim() != 3 or data.shape[1] != len(self.alphabet):
                raise InputError(f"one-hot input must be (N, {len(self.alphabet)}, L), got shape {tuple(data.shape)}")
            sequences = decode(data, self.alphabet)
            names = list(ids) if ids is not None else [f"seq{i}" for i in range(len(sequences))]
            encoded = list(data)
        else:
            if _looks_like_path(data):
                names, sequences = read_fasta(data, unique=False)  # uniqueness is checked below, for every input
            else:
                sequences = [data] if isinstance(data, str) else list(data)
                names = list(ids) if ids is not None else [f"seq{i}" for i in range(len(sequences))]
            if not sequences:
                raise InputError("no sequences given")
            empty = [name for name, s in zip(names, sequences) if not s]
            if empty:
                raise InputError(f"{empty[0]}: an empty sequence; remove it (there is nothing to explain)")
            encoded = [one_hot(s, self.alphabet, n=n, ids=[name])[0] for name, s in zip(names, sequences)]
        if len(names) != len(sequences):
            raise InputError(f"got {len(names)} ids for {len(sequences)} sequences")
        if unique:
            check_unique(names, Path(data).name if _looks_like_path(data) else "the sequences")
        return names, sequences, encoded

    # -- explaining -------------------------------------------------------------------------
    def explain_groups(
        self,
        data: SequenceInput,
        target: SequenceTarget = None,
        batch_size: int = 64,
        progress: bool = False,
        center: bool = False,
        rc_average: bool = False,
        ids: Sequence[str] | None = None,
        n: str = "zeros",
        unique_ids: bool = True,
        ledger: bool = False,
    ) -> Iterator[SequenceExplanation]:
        """One explanation per group of sequences of equal length, shortest first, each without
        padding (the memory of a group, not of the whole input padded to its longest record)."""
        for _, group in self._groups(
            data, target, batch_size, progress, center, rc_average, ids, n, unique_ids, ledger
        ):
            yield group

    def _groups(
        self,
        data: SequenceInput,
        target: SequenceTarget,
        batch_size: int,
        progress: bool,
        center: bool,
        rc_average: bool,
        ids: Sequence[str] | None,
        n: str,
        unique_ids: bool,
        ledger: bool = False,
    ) -> Iterator[tuple[list[int], SequenceExplanation]]:
        names, sequences, encoded = self._inputs(data, ids, n, unique_ids)
        target = self.target if target is None else target
        target = parse_sequence_target(target) if isinstance(target, str) else target
        lengths = [t.shape[-1] for t in encoded]
        dtype = model_dtype(self.model) or torch.get_default_dtype()
        for length in sorted(set(lengths)):
            rows = [i for i, value in enumerate(lengths) if value == length]
            batch = torch.stack([encoded[i] for i in rows]).to(dtype)
            yield (
                rows,
                self._explain_group(
                    batch,
                    [names[i] for i in rows],
                    [sequences[i] for i in rows],
                    _subset(target, rows),
                    batch_size,
                    progress,
                    center,
                    rc_average,
                    ledger,
                ),
            )

    def explain(
        self,
        data: SequenceInput,
        target: SequenceTarget = None,
        batch_size: int = 64,
        progress: bool = False,
        center: bool = False,
        rc_average: bool = False,
        ids: Sequence[str] | None = None,
        n: str = "zeros",
        unique_ids: bool = True,
        ledger: bool = False,
    ) -> SequenceExplanation:
        """Relevance of every letter for one output per sequence (see :class:`SequenceExplanation`).

        ``center``: the off-simplex correction (Majdandzic et al. 2023): the hypothetical map minus
        its mean over the alphabet, then projected on the observed letters. ``rc_average``: explain
        each sequence and its reverse complement and average the two, mapped back. ``target``: an
        output index, one per sequence, or a callable on the output (e.g. a profile head).
        Relevance is seeded with the explained value itself, so its sign follows it. Records of
        different lengths are padded with zeros to the longest here; use :meth:`explain_groups`
        to avoid that. Ids must be unique (``unique_ids=False`` allows repeats). ``ledger``: also
        record where ``delta`` went (:attr:`SequenceExplanation.ledger`).
        """
        groups = list(self._groups(data, target, batch_size, progress, center, rc_average, ids, n, unique_ids, ledger))
        if len(groups) == 1:
            return groups[0][1]
        return _pad_together(groups)

    def _explain_group(
        self,
        batch: torch.Tensor,
        names: list[str],
        sequences: list[str],
        target: Any,
        batch_size: int,
        progress: bool,
        center: bool,
        rc_average: bool,
        ledger: bool = False,
    ) -> SequenceExplanation:
        forward = self._explain(batch, target, batch_size, progress, names, ledger)
        rows = forward.ledger_rows
        if rc_average:
            if len(self.alphabet) != 4:
                raise InputError("rc_average needs a 4-letter alphabet in complementary order (ACGT or ACGU)")
            backward = self._explain(reverse_complement(batch), target, batch_size, progress, names, ledger)
            if rows is not None and backward.ledger_rows is not None:
                rows = rows.mean_with(backward.ledger_rows)
            units = (forward.hypothetical + reverse_complement(backward.hypothetical)) / 2
            channels = (forward.relevance + reverse_complement(backward.relevance)) / 2
            value = (forward.explained + backward.explained) / 2
        else:
            units, channels, value = forward.hypothetical, forward.relevance, forward.explained
        if center:
            units = units - units.mean(1, keepdim=True)
            channels = batch * units
        explained = value.detach().double().cpu()
        channels = channels.cpu()
        delta = explained - channels.reshape(len(names), -1).sum(1).double()
        if rows is not None and center:  # centering moves relevance after the backward pass: its own row
            rows = rows.with_row(
                "(off-simplex centering)", "center=True", delta - rows.absorbed.sum(0) - rows.numerical
            )
        return SequenceExplanation(
            names,
            sequences,
            batch.cpu(),
            forward.output,
            observed_relevance(batch.cpu(), channels),
            units.cpu(),
            explained,
            delta,
            [batch.shape[-1]] * len(names),
            self.alphabet,
            self.composite.name,
            channels,
            ledger_rows=rows,
        )

    def _target_and_output(self, target: Any) -> tuple[Any, Any]:
        """The target (a track target given the model's output layout) and the ``output=`` that
        picks the explained head (None: the core's default, for plain models)."""
        if isinstance(target, TrackTarget):
            target = target.resolved(self.architecture.track_layout)
        if isinstance(target, GenomicTarget):
            return target, target.pick
        if self.head is not None or not self.architecture.plain:
            return target, head_output(self.head)
        return target, None

    def _explain(
        self, batch: torch.Tensor, target: Any, batch_size: int, progress: bool, names: list[str], ledger: bool = False
    ):
        target, output = self._target_and_output(target)
        try:
            return explain(
                self.runner,
                batch,
                target=target,
                composite=self.composite,
                batch_size=batch_size,
                progress=progress,
                hypothetical=True,
                check_delta=False,
                output=output,
                strict=self.strict,
                ledger=ledger,
            )
        except LRPCoverageError:
            raise
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0][:200]
            conv = next(((name, m) for name, m in self.model.named_modules() if isinstance(m, nn.Conv1d)), None)
            if conv is not None and conv[1].in_channels != batch.shape[1]:
                raise InputError(
                    f"the model expects {conv[1].in_channels} input channels (its first convolution, "
                    f"{conv[0]!r}) but the one-hot sequences have {batch.shape[1]}, one per letter of "
                    f"the alphabet {self.alphabet}: give a model built for {len(self.alphabet)}-letter "
                    f"{self.alphabet} one-hot input"
                ) from error
            shown = ", ".join(repr(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise InputError(
                f"{shown} ({batch.shape[-1]} letters): the model cannot take sequences of this length "
                f"({first}); give longer sequences or drop these records"
            ) from error

    # -- the contract (runs) ----------------------------------------------------------------
    def reader(self, path: Any, column: str = "text") -> Reader:
        """FASTA records (plain or gzipped), see :mod:`lrp_domains.files.fasta`; or windows around
        genome regions (a :class:`~lrp_domains.bio.sequences.regions.GenomeRegions` from
        :meth:`regions_source`), of the model's input length unless a width is given."""
        from lrp_domains.bio.sequences.regions import GenomeRegions, RegionWindows

        if isinstance(path, GenomeRegions):
            if path.width is not None:
                return RegionWindows(path)
            from lrp_domains.bio.sequences.genome import default_window

            try:
                width = default_window(self)
            except InputError:
                width = None  # RegionWindows asks for --width
            return RegionWindows(path, width)
        return FastaRecords(path, what="a sequence run")

    @classmethod
    def regions_source(cls, regions: str | Path, genome: str | Path | None, width: int | None = None) -> Any:
        """Windows of ``width`` bases (default: the model's input length) around the regions of a
        BED or narrowPeak file, read from ``genome`` (:mod:`lrp_domains.bio.sequences.regions`)."""
        from lrp_domains.bio.sequences.regions import genome_regions

        return genome_regions(regions, genome, width)

    def explain_batch(
        self,
        ids: Sequence[str],
        items: Sequence[str],
        first_row: int = 0,
        target: Any = None,
        batch_size: int = 64,
        center: bool = False,
        rc_average: bool = False,
        concepts: str | None = None,
        ledger: bool = False,
    ) -> SequenceExplanation:
        """Explain one shard's records (runs key rows by row number: repeated ids are allowed).
        ``concepts``: a layer name; each record also gets the relevance of each channel of that
        layer (CRP, :func:`lrp_domains.latent.concept_relevance`; one more forward and backward
        pass, on the records as given), for relevance maximization over the run
        (:func:`lrp_domains.run.reference_examples`)."""
        target = parse_sequence_target(target) if isinstance(target, str) else target
        result = self.explain(
            list(items),
            ids=list(ids),
            target=target,
            batch_size=batch_size,
            center=center,
            rc_average=rc_average,
            unique_ids=False,
            ledger=ledger,
        )
        if concepts is not None:
            result.concepts = self._channel_relevance(result, str(concepts), target, batch_size)
        return result

    @classmethod
    def result_from_rows(cls, rows: pd.DataFrame, settings: dict[str, Any]) -> SequenceExplanation:
        """The explanation of a run's rows (:func:`explanation_from_rows`)."""
        result = explanation_from_rows(rows, str(settings.get("alphabet", DNA)), str(settings.get("composite", "")))
        if "ledger" in rows:
            result.ledger_rows = LedgerRows.from_json(rows["ledger"])
        return result

    def check_options(self, options: dict[str, Any]) -> None:
        """``target`` must be an index or a target text (:func:`parse_sequence_target`);
        ``concepts`` must name a module of the model."""
        if isinstance(options.get("target"), str):
            parse_sequence_target(options["target"])
        layer = options.get("concepts")
        if layer is not None and str(layer) not in dict(self.model.named_modules()):
            raise InputError(
                f"concepts={layer}: the model has no module of that name; give one of "
                f"{[name for name, _ in self.model.named_modules() if name][:12]}"
            )

    def _channel_relevance(
        self, result: SequenceExplanation, layer: str, target: Any, batch_size: int
    ) -> list[list[float]]:
        from lrp_domains.core.latent import concept_relevance

        if layer not in dict(self.model.named_modules()):
            raise InputError(f"concepts={layer}: the model has no module of that name (see model.named_modules())")
        target = self.target if target is None else target
        values: list[list[float]] = [[] for _ in result.ids]
        dtype = model_dtype(self.model) or torch.get_default_dtype()
        for length in sorted(set(result.lengths)):
            rows = [i for i, n in enumerate(result.lengths) if n == length]
            onehot = result.onehot[rows][..., :length].to(dtype)
            rule_target, output = self._target_and_output(_subset(target, rows))
            prefix = "" if self.runner is self.model else "model."
            found = concept_relevance(
                self.runner, onehot, prefix + layer, rule_target, self.composite, batch_size=batch_size, output=output
            )
            for row, value in zip(rows, found.double().cpu().tolist()):
                values[row] = value
        return values

    def result_rows(self, result: SequenceExplanation, ids: Sequence[str]) -> dict[str, list]:
        """Per record: the sequence, relevance per position and the hypothetical map (A x L, letter-major)."""
        return {
            **sequence_rows(result),
            "concepts": result.concepts if result.concepts is not None else [[] for _ in result.ids],
            "ledger": ledger_column(result.ledger_rows, len(result.ids)),
        }

    def settings(self) -> dict[str, Any]:
        """The alphabet (the order of the hypothetical map's rows); the input layout and head
        where they are not the defaults."""
        settings: dict[str, Any] = {"alphabet": self.alphabet}
        if self.architecture != Architecture():
            settings["architecture"] = vars(self.architecture).copy()
        if self.head is not None:
            settings["head"] = self.head
        return settings


def sequence_rows(result: SequenceExplanation) -> dict[str, list]:
    """A sequence explanation's run columns, one value per record, without padding: explained,
    delta, sequence, relevance per position and the hypothetical map (A x L, letter-major), the
    last two as float64 NumPy arrays (Arrow's list<double>, as Python lists of floats would give,
    without a Python float per base: at 2,114 bp those took most of a small model's run)."""
    per_position = result.per_position.detach().double().cpu().numpy()
    hypothetical = result.hypothetical.detach().double().cpu().numpy()
    return {
        "explained": result.explained.tolist(),
        "delta": result.delta.tolist(),
        "sequence": result.sequences,
        "relevance": [per_position[i, :n] for i, n in enumerate(result.lengths)],
        "hypothetical": [hypothetical[i, :, :n].reshape(-1) for i, n in enumerate(result.lengths)],
    }


def ledger_column(rows: LedgerRows | None, n: int) -> list[str | None]:
    """A run's ``ledger`` column: each row's ledger as JSON (:meth:`LedgerRows.example_json`), or
    None when the run did not record it."""
    return [None] * n if rows is None else [rows.example_json(i) for i in range(n)]


def explanation_from_rows(rows: pd.DataFrame, alphabet: str = DNA, composite: str = "") -> SequenceExplanation:
    """The :class:`SequenceExplanation` of a run's rows (the inverse of :func:`sequence_rows`; rows
    whose ``status`` is not ``ok`` must be left out first). Records of different lengths are padded
    together (``by_length()`` takes them apart). The per-position relevance is placed on the
    observed letter (spread evenly at an unknown position, where there is none), so
    ``per_position`` and ``relevance`` equal the explanation's; ``output`` holds the explained
    value (runs do not keep the model's other outputs)."""
    if not len(rows):
        raise InputError("no rows to rebuild an explanation from")
    sequences = [str(s) for s in rows["sequence"]]
    lengths = [len(s) for s in sequences]
    width, letters = max(lengths), len(alphabet)
    onehot = torch.zeros(len(sequences), letters, width)
    hypothetical = torch.zeros_like(onehot)
    per_position = torch.zeros(len(sequences), width, dtype=torch.float64)
    for i, (sequence, values, units) in enumerate(zip(sequences, rows["relevance"], rows["hypothetical"])):
        onehot[i, :, : lengths[i]] = one_hot(sequence, alphabet, ids=[str(rows["id"].iloc[i])])[0]
        per_position[i, : lengths[i]] = torch.from_numpy(np.array(values, dtype=np.float64))
        hypothetical[i, :, : lengths[i]] = torch.from_numpy(np.array(units, dtype=np.float32)).reshape(letters, -1)
    inside = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(1)
    weights = torch.where(onehot.sum(1, keepdim=True) > 0, onehot, inside.float() / letters)
    channels = (weights.double() * per_position.unsqueeze(1)).float()
    explained = torch.as_tensor(rows["explained"].to_numpy(np.float64))
    delta = torch.as_tensor(rows["delta"].to_numpy(np.float64))
    return SequenceExplanation(
        [str(i) for i in rows["id"]],
        sequences,
        onehot,
        explained.unsqueeze(1).float(),
        observed_relevance(onehot, channels),
        hypothetical,
        explained,
        delta,
        lengths,
        alphabet,
        composite,
        channels,
    )


def _pad_together(groups: list[tuple[list[int], SequenceExplanation]]) -> SequenceExplanation:
    """Groups of different lengths as one explanation, zero-padded to the longest, in input order."""
    records = sorted(((row, g, k) for rows, g in groups for k, row in enumerate(rows)), key=lambda item: item[0])
    width = max(g.onehot.shape[-1] for _, g in groups)
    first = groups[0][1]

    def padded(name: str) -> torch.Tensor:
        values = [getattr(g, name)[k] for _, g, k in records]
        out = torch.zeros((len(values), values[0].shape[0], width), dtype=values[0].dtype)
        for row, value in enumerate(values):
            out[row, :, : value.shape[-1]] = value
        return out

    outputs = [g.output[k] for _, g, k in records]
    output = torch.stack(outputs) if len({o.shape for o in outputs}) == 1 else outputs
    return SequenceExplanation(
        [g.ids[k] for _, g, k in records],
        [g.sequences[k] for _, g, k in records],
        padded("onehot"),
        output,
        padded("relevance"),
        padded("hypothetical"),
        torch.stack([g.explained[k] for _, g, k in records]),
        torch.stack([g.delta[k] for _, g, k in records]),
        [g.lengths[k] for _, g, k in records],
        first.alphabet,
        first.composite,
        padded("channel_relevance"),
        ledger_rows=_ledger_in_order(groups, records),
    )


def _ledger_in_order(groups: list[tuple[list[int], SequenceExplanation]], records: list) -> LedgerRows | None:
    """The groups' ledgers as one, its examples in input order (None when a group has none)."""
    ledgers = [g.ledger_rows for _, g in groups]
    if any(rows is None for rows in ledgers):
        return None
    whole = LedgerRows.concatenate([rows for rows in ledgers if rows is not None])
    offsets, start = {}, 0
    for _, group in groups:
        offsets[id(group)] = start
        start += len(group)
    return whole.subset([offsets[id(g)] + k for _, g, k in records])


def _subset(target: Any, rows: list[int]) -> Any:
    if target is None or callable(target) or isinstance(target, int):
        return target
    values = target.tolist() if isinstance(target, torch.Tensor) else list(target)
    return [values[i] for i in rows]
