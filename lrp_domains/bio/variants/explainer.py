"""Variants as a dataset source: a VCF read shard by shard, each variant explained as
:func:`~lrp_domains.bio.explain_variants` does, through the explainer contract.

``lrp-domains run variants calls.vcf.gz --out DIR --option fasta=genome.fa [--option window=200]
[--option motifs=none]`` (or :func:`lrp_domains.run.explain_dataset` with a
:class:`VariantExplainer`) writes one row per ALT allele, in file order, into resumable Parquet
shards, locally or on Ray (every worker opens the genome itself: give a path all workers see).

A shard holds whole VCF lines: it starts at a line and takes lines until it holds ``shard_size``
alleles or more (a multi-allelic line is never cut), so shard sizes vary by a few rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from lrp_domains.bio.sequences.explainer import SequenceExplainer
from lrp_domains.bio.variants.effects import COLUMNS, TRACK_COLUMNS, VariantRecord, explain_variants, parse_vcf_line
from lrp_domains.bio.variants.motifs import MOTIF_COLUMNS
from lrp_domains.domains import DomainExplainer, Reader
from lrp_domains.errors import InputError
from lrp_domains.files.formats import Shard, decode_line, open_binary, require_file, walk_records
from lrp_domains.options import Option

#: Output columns after ``row`` and ``id`` (``variant_id`` is the VCF's ID column); the track
#: columns are empty unless the run has ``delta_tracks``.
RUN_COLUMNS = tuple("variant_id" if c == "id" else c for c in COLUMNS) + MOTIF_COLUMNS + TRACK_COLUMNS


def variants_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The table :func:`~lrp_domains.bio.explain_variants` returns, from a variants run's rows (any
    status; ``variant_id`` back to ``id``; in the run's order; the track columns kept only when the
    run filled them)."""
    table = rows.drop(columns=[c for c in ("row", "id") if c in rows]).rename(columns={"variant_id": "id"})
    tracks = "delta_track" in table and table["delta_track"].notna().any()
    columns = list(COLUMNS) + [c for c in MOTIF_COLUMNS if c in table] + (list(TRACK_COLUMNS) if tracks else [])
    table = table[columns].reset_index(drop=True)
    if tracks:
        table["window_start"] = [None if pd.isna(v) else int(v) for v in table["window_start"]]
    return table


class VcfRecords:
    """The ALT alleles of a VCF (plain or gzipped), indexed once into shards of whole lines."""

    def __init__(self, path: str | Path) -> None:
        self.path = require_file(path, "VCF")
        name = self.path.name.lower()
        if not (name.endswith(".vcf") or name.endswith(".vcf.gz") or name.endswith(".vcf.bgz")):
            raise InputError(f"{self.path.name}: a variants run reads a VCF (.vcf, .vcf.gz)")

    def _lines(self, shard: Shard | None = None):
        offset, line = (shard.offset, shard.line) if shard is not None else (0, 1)
        with open_binary(self.path) as handle:
            for raw in walk_records(handle, "line", self.path, offset, line):
                text = decode_line(raw.lines[0], self.path, raw.line).rstrip("\r\n")
                if not text.startswith("#"):
                    yield raw, list(parse_vcf_line(text, self.path.name, raw.line))

    def shards(self, shard_size: int) -> list[Shard]:
        """Shards of at least ``shard_size`` alleles each (the last may hold fewer), whole lines."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        starts: list[tuple[int, int, int]] = []  # (byte offset, line, first allele)
        count = 0
        for raw, records in self._lines():
            if not starts or count - starts[-1][2] >= shard_size:
                starts.append((raw.offset, raw.line, count))
            count += len(records)
        stops = [start for _, _, start in starts[1:]] + [count]
        return [
            Shard(i, first, stop, offset, line) for i, ((offset, line, first), stop) in enumerate(zip(starts, stops))
        ]

    def read(self, shard: Shard) -> tuple[list[str], list[VariantRecord]]:
        """One shard's alleles; ids are ``chrom:pos:ref>alt``."""
        found: list[VariantRecord] = []
        for _, records in self._lines(shard):
            found += records
            if len(found) >= shard.size:
                break
        return [f"{r.chrom}:{r.pos}:{r.ref}>{r.alt}" for r in found], found


class VariantExplainer(DomainExplainer):
    """Variant effects over a VCF (see the module docstring): wraps a :class:`SequenceExplainer`
    (model, composite, target) and explains each allele's reference and alternative windows."""

    kind: ClassVar[str] = "variants"
    item: ClassVar[str] = "variant"
    default_composite: ClassVar[str] = "genomics"
    run_options: ClassVar[dict[str, Any]] = {
        "fasta": None,
        "window": None,
        "target": None,
        "batch_size": 64,
        "motifs": "JASPAR2024",
        "delta_tracks": False,
    }
    option_types: ClassVar[dict[str, Option]] = {
        "fasta": Option("text"),
        "window": Option("int", minimum=1),
        "motifs": Option("text"),
    }
    columns: ClassVar[tuple[str, ...]] = RUN_COLUMNS
    finite_columns: ClassVar[tuple[str, ...]] = ("ref_score", "alt_score", "delta_score", "delta_relevance")

    def __init__(
        self, sequences: SequenceExplainer, fasta: str | Path | None = None, window: int | None = None
    ) -> None:
        self.sequences = sequences
        self.model = sequences.model
        self.composite = sequences.composite
        self.fasta = fasta
        self.window = window

    @classmethod
    def from_options(
        cls, model: str | None = None, weights: str | None = None, composite: str | None = None
    ) -> VariantExplainer:
        """A sequence explainer from the command-line strings, wrapped (the genome comes as the
        ``fasta`` run option)."""
        return cls(SequenceExplainer.from_options(model, weights, composite))

    def reader(self, path: str | Path, column: str = "text") -> Reader:
        """The VCF's alleles (:class:`VcfRecords`)."""
        return VcfRecords(path)

    def _fasta(self, fasta: Any) -> Any:
        chosen = fasta if fasta is not None else self.fasta
        if chosen is None:
            raise InputError(
                "a variants run needs the reference genome: --option fasta=GENOME.fa (its .fai is read "
                "if there, else an index is built in ~/.cache/lrp-domains, never beside the genome)"
            )
        return chosen

    def check_options(self, options: dict[str, Any]) -> None:
        """The genome must exist, the window be a positive integer, the motif library load."""
        fasta = self._fasta(options.get("fasta"))
        if not Path(fasta).is_file():
            raise InputError(f"fasta={fasta}: no such FASTA file")
        window = options.get("window", self.window)
        if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
            raise InputError(f"window={window!r}: give a positive number of bases")
        motifs = options.get("motifs", self.run_options["motifs"])
        if motifs is not None and str(motifs).lower() != "none":
            from lrp_domains.bio.motifs.seqlets import load_motifs

            load_motifs(motifs)

    def explain_batch(
        self,
        ids: Sequence[str],
        items: Sequence[VariantRecord],
        first_row: int = 0,
        fasta: Any = None,
        window: int | None = None,
        target: Any = None,
        batch_size: int = 64,
        motifs: Any = "JASPAR2024",
        delta_tracks: bool = False,
    ) -> pd.DataFrame:
        """The variants' rows in input order (:func:`~lrp_domains.bio.explain_variants`, unsorted;
        ``motifs="none"`` leaves the motif columns empty; ``delta_tracks`` fills the track columns,
        for a bigWig of the relevance change)."""
        library = None if motifs is None or str(motifs).lower() == "none" else motifs
        table = explain_variants(
            self.sequences,
            list(items),
            self._fasta(fasta),
            window=window if window is not None else self.window,
            target=target,
            batch_size=batch_size or 64,
            motifs=library,
            sort=False,
            delta_tracks=delta_tracks,
        )
        for column in MOTIF_COLUMNS:
            if column not in table:
                table[column] = "" if column.endswith(("motif", "change")) else float("nan")
        for column in TRACK_COLUMNS:
            if column not in table:
                table[column] = None
        return table

    def result_rows(self, result: pd.DataFrame, ids: Sequence[str]) -> dict[str, list]:
        """Per allele: the columns of :func:`~lrp_domains.bio.explain_variants` (``id`` as ``variant_id``)."""
        renamed = result.rename(columns={"id": "variant_id"})
        rows = {column: renamed[column].tolist() for column in RUN_COLUMNS}
        rows["delta_track"] = [
            None if track is None or (isinstance(track, float) and track != track) else [float(v) for v in track]
            for track in rows["delta_track"]
        ]
        return rows

    @classmethod
    def result_from_rows(cls, rows: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
        """The variants table of a run's rows (``variant_id`` back to ``id``; the run's order)."""
        return variants_table(rows)

    def settings(self) -> dict[str, Any]:
        """The alphabet and the window given to the explainer (runs also record their options)."""
        return {"alphabet": self.sequences.alphabet, "window": self.window}
