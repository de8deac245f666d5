"""Genome tracks from sequence relevance: bigWig (per-base values) and BED (seqlets).

Coordinates follow BED and ``bedtools getfasta``: **0-based start, end exclusive**. A record id
``chr1:1000-1200`` covers the 200 bases at 0-based positions 1000..1199 (1-based 1001..1200).
Accepted id forms (:func:`parse_region`):

- ``chr1:1000-1200`` and ``chr1:1,000-1,200`` (thousands separators);
- a strand suffix ``chr1:1000-1200(+)`` / ``(-)`` (``bedtools getfasta -s``);
- a name prefix ``name::chr1:1000-1200`` (``bedtools getfasta -name``), with or without strand.

``samtools faidx`` writes 1-based inclusive ids (``chr1:1001-1200`` for the same 200 bases); such
ids are one base short under this convention, and the check against the record's length names
them. Records whose ids carry no coordinates can be placed with a BED of windows whose name
column is the record id (:func:`read_windows_bed`).

A record from a ``(-)`` region is the reverse complement of the genome: its position ``i`` is
genome base ``end - 1 - i``. Its values are reversed before they are written, and its seqlets are
mapped from the other end with their strand flipped.

Overlapping windows (tiles with a stride shorter than the window): each base's value is the
**mean** of the windows that cover it (``overlap="mean"``, the default), computed in a sweep that
holds only the bases still covered by an open window; ``overlap="error"`` refuses overlaps,
naming both windows. Every check (unknown chromosome, a window past a chromosome's end, a length
that differs from the region's) runs before the file is opened, and the file is written under a
temporary name and renamed when complete, so a refused call writes nothing.

bigWig needs its intervals sorted: chromosomes in name order (as ``sort -k1,1`` and
``bedGraphToBigWig``), then by start; the header lists every chromosome of ``chrom_sizes`` in
that order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np

from lrp_domains.errors import InputError
from lrp_domains.files.formats import open_binary
from lrp_domains.files.writing import atomic_path

__all__ = [
    "Region",
    "load_chrom_sizes",
    "parse_region",
    "read_windows_bed",
    "run_genome_sizes",
    "run_to_bigwig",
    "seqlets_to_genome_bed",
    "to_bigwig",
]

ChromSizes = Union[str, Path, Mapping[str, int]]

_REGION = re.compile(
    r"^(?:(?P<name>.*?)::)?(?P<chrom>[^\s:][^\s]*?):(?P<start>\d[\d,]*)-(?P<end>\d[\d,]*)"
    r"(?:\((?P<strand>[+\-.])\))?$"
)


class Region(NamedTuple):
    """A genome interval: 0-based ``start``, exclusive ``end``, ``strand`` ``+``, ``-`` or ``.``
    (unstranded, treated as ``+``)."""

    chrom: str
    start: int
    end: int
    strand: str = "+"

    @property
    def length(self) -> int:
        return self.end - self.start


def parse_region(record_id: str, length: int | None = None) -> Region:
    """The genome region of a record id such as ``chr1:1000-1200`` (module docstring for the
    forms and the 0-based, end-exclusive convention).

    ``length``: the record's sequence length; an InputError when the region's length differs.
    """
    match = _REGION.match(str(record_id).strip())
    if match is None:
        raise InputError(
            f"record id {record_id!r} carries no genome coordinates; expected chrom:start-end "
            "(0-based start, end exclusive, as bedtools getfasta writes, e.g. chr1:1000-1200), "
            "or give a BED of windows whose name column is the record id"
        )
    start = int(match["start"].replace(",", ""))
    end = int(match["end"].replace(",", ""))
    if start >= end:
        raise InputError(f"record id {record_id!r}: start {start} is not before end {end}")
    region = Region(match["chrom"], start, end, match["strand"] or "+")
    if length is not None and region.length != length:
        raise InputError(
            f"record id {record_id!r}: the region covers {region.length} bases but the record has {length}; "
            "ids are read as 0-based start, end exclusive (bedtools getfasta); samtools faidx ids "
            "(1-based, inclusive) are one base short"
        )
    return region


def read_windows_bed(path: str | Path) -> dict[str, Region]:
    """Record id -> region from a BED of windows (plain or gzipped): chrom, start, end, name (the
    record id), and optionally score and strand (column 6). ``track``/``browser``/``#`` lines are
    skipped. An InputError names the line of a malformed row or a repeated name."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such windows BED file")
    windows: dict[str, Region] = {}
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            fields = line.split("\t")
            if len(fields) < 4:
                raise InputError(
                    f"{path.name}, line {number}: a windows BED needs 4 tab-separated columns "
                    f"(chrom, start, end, name = the record id), found {len(fields)}"
                )
            chrom, start_text, end_text, name = fields[:4]
            try:
                start, end = int(start_text), int(end_text)
            except ValueError:
                raise InputError(
                    f"{path.name}, line {number}: start and end must be integers, got {start_text!r} and {end_text!r}"
                ) from None
            if start < 0 or start >= end:
                raise InputError(f"{path.name}, line {number}: start {start} must be >= 0 and before end {end}")
            strand = fields[5] if len(fields) > 5 and fields[5] in ("+", "-", ".") else "+"
            if name in windows:
                raise InputError(
                    f"{path.name}, line {number}: the name {name!r} appears twice; "
                    "each window's name must be a unique record id"
                )
            windows[name] = Region(chrom, start, end, strand)
    if not windows:
        raise InputError(f"{path.name}: no windows in the BED file")
    return windows


def load_chrom_sizes(sizes: ChromSizes) -> dict[str, int]:
    """Chromosome sizes from a dict, a ``chrom.sizes`` file (name, length) or a FASTA index
    ``.fai`` (name, length, ...); plain or gzipped. A FASTA path is read through its index (its
    ``.fai``, else one built outside its folder: :func:`~lrp_domains.bio.sequences.genome.open_fasta`)."""
    if not isinstance(sizes, Mapping):
        path = Path(sizes)
        if path.suffix.lower() in (".fa", ".fasta", ".fna") and Path(f"{path}.fai").is_file():
            sizes = Path(f"{path}.fai")
        elif path.suffix.lower() in (".fa", ".fasta", ".fna") and path.is_file():
            from lrp_domains.bio.sequences.genome import genome_sizes

            sizes = genome_sizes(path)
    if isinstance(sizes, Mapping):
        result = {str(k): int(v) for k, v in sizes.items()}
    else:
        path = Path(sizes)
        if not path.is_file():
            raise InputError(f"{path}: no such chromosome sizes file (give a chrom.sizes file, a .fai index or a dict)")
        result = {}
        with open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.decode("utf-8", errors="replace").strip()
                if not line or line.startswith("#"):
                    continue
                fields = line.split()
                try:
                    result[fields[0]] = int(fields[1])
                except (IndexError, ValueError):
                    raise InputError(
                        f"{path.name}, line {number}: expected a chromosome name and its length "
                        f"(chrom.sizes or .fai), got {line[:80]!r}"
                    ) from None
    if not result:
        raise InputError("no chromosome sizes given")
    bad = [name for name, size in result.items() if size <= 0]
    if bad:
        raise InputError(f"chromosome sizes must be positive: {bad[:5]}")
    return result


def _check_region(region: Region, sizes: Mapping[str, int], what: str) -> None:
    if region.chrom not in sizes:
        known = ", ".join(list(sizes)[:5])
        raise InputError(f"{what}: chromosome {region.chrom!r} is not in the chromosome sizes ({known}, ...)")
    if region.start < 0 or region.end > sizes[region.chrom]:
        raise InputError(
            f"{what}: {region.chrom}:{region.start}-{region.end} lies outside {region.chrom} "
            f"(length {sizes[region.chrom]})"
        )


class _Entry(NamedTuple):
    chrom: str
    start: int
    end: int
    reverse: bool
    name: str
    values: Callable[[], np.ndarray]


def _write_entries(entries: list[_Entry], path: str | Path, sizes: dict[str, int], overlap: str) -> Path:
    """Check, sort and write windows (each loading its values lazily) as one bigWig."""
    import pyBigWig

    if overlap not in ("mean", "error"):
        raise InputError(f"overlap must be 'mean' or 'error', got {overlap!r}")
    if not entries:
        raise InputError("no records to write: the bigWig would be empty")
    for entry in entries:
        _check_region(Region(entry.chrom, entry.start, entry.end), sizes, f"record {entry.name!r}")
    entries = sorted(entries, key=lambda e: (e.chrom, e.start, e.end))
    if overlap == "error":
        for before, after in zip(entries, entries[1:]):
            if before.chrom == after.chrom and after.start < before.end:
                raise InputError(
                    f"records {before.name!r} and {after.name!r} overlap on {before.chrom} "
                    f"({before.start}-{before.end} and {after.start}-{after.end}); "
                    "use overlap='mean' to average overlapping values"
                )
    path = Path(path)
    with atomic_path(path) as temporary:
        writer = pyBigWig.open(str(temporary), "w")
        try:
            writer.addHeader(sorted(sizes.items()), maxZooms=10)
            _sweep(writer, entries)
        finally:
            writer.close()
    return path


def _sweep(writer: Any, entries: list[_Entry]) -> None:
    """Add sorted windows, averaging where they overlap; holds only the still-open bases."""
    chrom: str | None = None
    begin = 0
    sums = np.zeros(0)
    counts = np.zeros(0)

    def flush(upto: int) -> None:
        nonlocal begin, sums, counts
        k = min(upto - begin, len(sums))
        if k > 0:
            values = (sums[:k] / counts[:k]).astype(np.float32)
            writer.addEntries(chrom, begin, values=values.tolist(), span=1, step=1)
            sums, counts, begin = sums[k:], counts[k:], begin + k

    for entry in entries:
        values = np.asarray(entry.values(), dtype=np.float64).reshape(-1)
        if len(values) != entry.end - entry.start:
            raise InputError(
                f"record {entry.name!r}: {len(values)} values for a region of "
                f"{entry.end - entry.start} bases ({entry.chrom}:{entry.start}-{entry.end})"
            )
        if entry.reverse:
            values = values[::-1]
        if entry.chrom != chrom:
            if chrom is not None:
                flush(begin + len(sums))
            chrom, begin, sums, counts = entry.chrom, entry.start, np.zeros(0), np.zeros(0)
        if entry.start >= begin + len(sums):
            flush(begin + len(sums))
            begin = entry.start
        else:
            flush(entry.start)
        grow = entry.end - (begin + len(sums))
        if grow > 0:
            sums = np.concatenate([sums, np.zeros(grow)])
            counts = np.concatenate([counts, np.zeros(grow)])
        offset = entry.start - begin
        sums[offset : offset + len(values)] += values
        counts[offset : offset + len(values)] += 1
    if chrom is not None:
        flush(begin + len(sums))


def _regions_of(
    ids: Iterable[str],
    lengths: Iterable[int],
    regions: Mapping[str, Region] | str | Path | None,
) -> list[Region]:
    if regions is not None and not isinstance(regions, Mapping):
        regions = read_windows_bed(regions)
    result = []
    for name, length in zip(ids, lengths):
        if regions is None:
            result.append(parse_region(name, length))
            continue
        if name not in regions:
            raise InputError(f"record {name!r} is not a name in the windows BED")
        region = Region(*regions[name])
        if region.length != length:
            raise InputError(
                f"record {name!r}: its window {region.chrom}:{region.start}-{region.end} covers "
                f"{region.length} bases but the record has {length}"
            )
        result.append(region)
    return result


def to_bigwig(
    records: Any,
    path: str | Path,
    chrom_sizes: ChromSizes,
    *,
    regions: Mapping[str, Region] | str | Path | None = None,
    overlap: str = "mean",
) -> Path:
    """Write per-base values as a bigWig.

    ``records``: an iterable of ``(chrom, start, values)`` tuples (values in genome orientation,
    one per base from ``start``; also per-variant delta tracks), or a
    :class:`~lrp_domains.bio.SequenceExplanation` (or a list of them, as
    :meth:`~lrp_domains.bio.SequenceExplainer.explain_groups` returns), whose ``per_position``
    relevance is placed by the record ids (:func:`parse_region`) or by ``regions`` (id -> region,
    or a windows BED path). ``chrom_sizes``: a dict, a ``chrom.sizes`` file or a ``.fai`` index.
    ``overlap``: ``"mean"`` or ``"error"`` (module docstring). Returns the path.
    """
    sizes = load_chrom_sizes(chrom_sizes)
    explanations = (
        records
        if isinstance(records, (list, tuple)) and records and all(hasattr(r, "per_position") for r in records)
        else [records]
        if hasattr(records, "per_position")
        else None
    )
    entries: list[_Entry] = []
    if explanations is not None:
        for explanation in explanations:
            per_position = explanation.per_position.detach().double().cpu().numpy()
            places = _regions_of(explanation.ids, explanation.lengths, regions)
            for i, (name, region) in enumerate(zip(explanation.ids, places)):
                row = per_position[i, : explanation.lengths[i]]
                entries.append(
                    _Entry(region.chrom, region.start, region.end, region.strand == "-", name, lambda row=row: row)
                )
    else:
        for number, record in enumerate(records):
            try:
                chrom, start, values = record
            except (TypeError, ValueError):
                raise InputError(
                    f"record {number}: expected (chrom, start, values), got {type(record).__name__}"
                ) from None
            values = np.asarray(values, dtype=np.float64).reshape(-1)
            start = int(start)
            end = start + len(values)
            entries.append(
                _Entry(str(chrom), start, end, False, f"{chrom}:{start}-{end}", lambda values=values: values)
            )
    return _write_entries(entries, path, sizes, overlap)


class _Spill:
    """The windows' relevance written once, in run order, to a temporary file (float64), and read
    back in genome order through a memory map: memory holds one shard while writing, and windows
    in any order cost one read each (peaks files are often sorted by score, not position)."""

    def __enter__(self) -> _Spill:
        import tempfile

        self.folder = tempfile.TemporaryDirectory(prefix="lrp-domains-bigwig-")
        self.path = Path(self.folder.name) / "relevance.f64"
        self.handle = self.path.open("wb")
        self.size = 0
        self.map: Any = None
        return self

    def add(self, values: np.ndarray) -> tuple[int, int]:
        """Append ``values``; their place (offset, count)."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        self.handle.write(values.tobytes())
        start, self.size = self.size, self.size + len(values)
        return start, len(values)

    def get(self, start: int, count: int) -> np.ndarray:
        if self.map is None:
            self.handle.close()
            self.map = np.memmap(self.path, dtype=np.float64, mode="r")
        return np.asarray(self.map[start : start + count])

    def __exit__(self, *exc: object) -> None:
        self.handle.close()
        self.map = None
        self.folder.cleanup()


def _shard_files(out_dir: Path) -> tuple[dict[str, Any], list[Path]]:
    from lrp_domains.run.manifest import finished_run

    return finished_run(out_dir, "a bigWig of the run")


def run_genome_sizes(manifest: Mapping[str, Any]) -> dict[str, int] | None:
    """The chromosome sizes of the genome a run's windows were read from (runs made with
    ``--regions``: its input fingerprint lists the genome's sequences); None for other runs."""
    genome = manifest.get("input", {}).get("genome")
    sequences = genome.get("sequences") if isinstance(genome, Mapping) else None
    return {str(k): int(v) for k, v in sequences.items()} if isinstance(sequences, Mapping) and sequences else None


def run_to_bigwig(
    out_dir: str | Path,
    path: str | Path,
    chrom_sizes: ChromSizes | None = None,
    windows: Mapping[str, Region] | str | Path | None = None,
    overlap: str = "mean",
) -> Path:
    """A finished sequence run of :func:`lrp_domains.run.explain_dataset` as a bigWig of per-base
    relevance, shard by shard.

    The records are placed by their ids (:func:`parse_region`) or by ``windows`` (a windows BED
    path or id -> region). A first pass reads each shard's ids and relevance lengths and checks
    every record and keeps its relevance in a temporary file (one shard in memory at a time); the
    second reads them back in genome order. Rows whose status is not ``ok`` are left out.
    ``chrom_sizes`` default to the genome of a run made with ``--regions``
    (:func:`run_genome_sizes`). Returns the path.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    manifest, files = _shard_files(out_dir)
    if windows is not None and not isinstance(windows, Mapping):
        windows = read_windows_bed(windows)
    with _Spill() as spill:
        entries: list[_Entry] = []
        for file in files:
            marked = "status" in pq.read_schema(file).names
            table = pq.read_table(file, columns=["id", "relevance", *(["status"] if marked else [])])
            ids = table.column("id").to_pylist()
            lengths = pc.list_value_length(table.column("relevance")).to_pylist()
            usable = table.column("status").to_pylist() if marked else ["ok"] * len(ids)
            rows = [row for row in range(len(ids)) if usable[row] == "ok"]  # NaN, Inf, off the genome: left out
            if windows is None:
                _check_run_ids(out_dir, [ids[row] for row in rows])
            relevance = table.column("relevance").combine_chunks()
            offsets, flat = relevance.offsets.to_numpy(), relevance.values.to_numpy(zero_copy_only=False)
            for row, name, region in zip(
                rows,
                [ids[row] for row in rows],
                _regions_of([ids[row] for row in rows], [lengths[row] for row in rows], windows),
            ):
                place = spill.add(flat[offsets[row] : offsets[row + 1]])
                entries.append(
                    _Entry(
                        region.chrom,
                        region.start,
                        region.end,
                        region.strand == "-",
                        name,
                        lambda place=place: spill.get(*place),
                    )
                )
            del table, relevance, flat
        if not entries:
            raise InputError(f"{out_dir}: the run has no finished shards to write")
        if chrom_sizes is None:
            chrom_sizes = run_genome_sizes(manifest)
            if chrom_sizes is None:
                raise InputError(
                    f"{out_dir}: the run was not made from a genome (--regions); give the chromosome "
                    "sizes (--genome GENOME.fa or --chrom-sizes FILE)"
                )
        return _write_entries(entries, path, load_chrom_sizes(chrom_sizes), overlap)


def _check_run_ids(out_dir: Path, ids: list[str]) -> None:
    """An InputError saying how to get coordinates when a run's ids carry none."""
    for name in ids:
        if _REGION.match(str(name).strip()) is None:
            raise InputError(
                f"{out_dir}: the run's ids carry no genome coordinates (e.g. {name!r}); explain genome "
                "windows with `lrp-domains run sequences --regions PEAKS --genome GENOME.fa` (ids "
                "chrom:start-end(strand)), or name FASTA records as bedtools getfasta does"
            )


def _iter_genome_rows(seqlets: Any, regions: Mapping[str, Region] | None) -> Iterator[tuple]:
    names = seqlets["motif_name"] if "motif_name" in seqlets else [None] * len(seqlets)
    match_strands = seqlets["match_strand"] if "match_strand" in seqlets else [None] * len(seqlets)
    strands = seqlets["strand"] if "strand" in seqlets else ["+"] * len(seqlets)
    for name, start, end, score, motif, match_strand, strand in zip(
        seqlets["id"], seqlets["start"], seqlets["end"], seqlets["relevance"], names, match_strands, strands
    ):
        if regions is None:
            region = parse_region(name)
        elif name in regions:
            region = Region(*regions[name])
        else:
            raise InputError(f"seqlet of record {name!r}: the record is not in the regions given")
        start, end = int(start), int(end)
        if not 0 <= start < end <= region.length:
            raise InputError(
                f"seqlet {start}-{end} of record {name!r} lies outside the record's "
                f"{region.length} bases ({region.chrom}:{region.start}-{region.end})"
            )
        motif = motif if isinstance(motif, str) and motif else None
        own = match_strand if motif and match_strand in ("+", "-") else (strand if strand in ("+", "-", ".") else ".")
        if region.strand == "-":
            genome = (region.end - end, region.end - start)
            own = {"+": "-", "-": "+"}.get(own, own)
        else:
            genome = (region.start + start, region.start + end)
        yield region.chrom, genome[0], genome[1], motif or "seqlet", round(float(score), 6), own, name


def seqlets_to_genome_bed(
    seqlets: Any,
    path: str | Path,
    regions: Mapping[str, Region] | str | Path | None = None,
    chrom_sizes: ChromSizes | None = None,
) -> Path:
    """Seqlets (:func:`~lrp_domains.bio.call_seqlets`, optionally annotated) as BED6 in genome
    coordinates: chrom, start, end (record start + offset; from the other end for a ``(-)``
    region), name (the motif match, else ``seqlet``), score (summed relevance), strand (the motif
    match's when named, else the seqlet's own ``strand``, ``+`` = the record's; flipped for a
    ``(-)`` region). Sorted by chrom (name order), start, end.

    ``regions``: id -> region or a windows BED path; ``None`` parses the record ids. With
    ``chrom_sizes``, each interval must lie inside its chromosome (an InputError, nothing written).
    """
    if regions is not None and not isinstance(regions, Mapping):
        regions = read_windows_bed(regions)
    rows = sorted(_iter_genome_rows(seqlets, regions), key=lambda r: (r[0], r[1], r[2]))
    if chrom_sizes is not None:
        sizes = load_chrom_sizes(chrom_sizes)
        for row in rows:
            _check_region(Region(row[0], row[1], row[2]), sizes, f"seqlet of record {row[6]!r}")
    lines = [f"{c}\t{s}\t{e}\t{n}\t{score:g}\t{strand}\n" for c, s, e, n, score, strand, _ in rows]
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text("".join(lines), encoding="utf-8")
    return path
