"""Genome coordinates as a run's input: peaks (BED3, BED6, narrowPeak) and a genome FASTA.

``lrp-domains run sequences --regions peaks.narrowPeak --genome genome.fa --out DIR`` explains one
window of ``width`` bases per region, read from the genome through its index
(:func:`~lrp_domains.bio.sequences.genome.open_fasta`: nothing is written beside the genome):

- the window is centred on the summit for a narrowPeak (column 10, the summit's 0-based offset from
  the start; ``-1``: none, then the region's centre), on the region's centre otherwise
  (``start = centre - width // 2``, as bpnet-lite and chromBPNet cut windows);
- a ``-`` region (BED6 column 6) is read as the reverse complement of the genome; unstranded
  regions (BED3, ``.``) are read on the forward strand;
- its id is ``chrom:start-end(strand)`` of the window, 0-based, end exclusive
  (:func:`~lrp_domains.bio.sequences.tracks.parse_region` reads it back), so the bigWig, BED and report
  steps place it on the genome;
- a window running off its chromosome, or on a chromosome the genome lacks, is an
  :class:`~lrp_domains.domains.Unusable` item: its row gets status ``off_chromosome`` or
  ``unknown_chrom`` and the run goes on.

Lines starting with ``#``, ``track`` or ``browser`` and blank lines are skipped (they are not
rows); a malformed line is one InputError naming the file and line. Plain or gzipped files.

The reader is built from :class:`GenomeRegions` (picklable: a Ray worker builds the same reader
from it), and its fingerprint is the BED's SHA-256, the genome's identity (file name, size, and
its sequence names and lengths: a genome is never hashed whole) and the width; the run's manifest
so also records the genome's chromosome sizes, which the bigWig and BED steps use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lrp_domains.domains import Unusable
from lrp_domains.errors import InputError
from lrp_domains.files.formats import Shard, decode_line, open_binary, require_file, walk_records

__all__ = ["GenomeRegions", "Peak", "RegionWindows", "genome_identity", "genome_regions", "read_peak", "token_window"]

#: Status of a window that runs off its chromosome, and of one on a chromosome the genome lacks.
OFF_CHROMOSOME = "off_chromosome"
UNKNOWN_CHROM = "unknown_chrom"
_COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")


@dataclass(frozen=True)
class GenomeRegions:
    """What a run over genome regions reads: the peaks file, the genome FASTA and the window
    width (None: the model's input length, resolved by the explainer's reader)."""

    regions: str
    genome: str
    width: int | None = None

    def __str__(self) -> str:
        return self.regions


def genome_regions(regions: str | Path, genome: str | Path | None, width: int | None = None) -> GenomeRegions:
    """A :class:`GenomeRegions` whose files exist (InputErrors naming what is missing)."""
    if genome is None:
        raise InputError("--regions needs --genome GENOME.fa (the FASTA the regions' coordinates refer to)")
    require_file(regions, "regions (BED or narrowPeak)")
    require_file(genome, "genome FASTA")
    if width is not None and (isinstance(width, bool) or int(width) < 1):
        raise InputError(f"--width must be a positive number of bases, got {width}")
    return GenomeRegions(str(regions), str(genome), None if width is None else int(width))


def token_window(tokenizer: Any, max_tokens: int | None) -> int | None:
    """The most bases a k-mer tokenizer (:func:`~lrp_domains.bio.dna_lm.tokenizers.kmer_tokenizer`,
    ``kmer`` in its settings) fits into ``max_tokens`` tokens, its special tokens included; None
    for other tokenizers (BPE tokens vary in length: the width must be given)."""
    k = getattr(tokenizer, "init_kwargs", {}).get("kmer")
    if not isinstance(k, int) or k < 1 or not max_tokens:
        return None
    specials = len(tokenizer("")["input_ids"])
    return max(0, int(max_tokens) - specials) * k or None


@dataclass(frozen=True)
class Peak:
    """One line of a peaks file: 0-based start, end exclusive, strand ``+``/``-``/``.``, summit
    offset from ``start`` (-1: none)."""

    chrom: str
    start: int
    end: int
    strand: str = "."
    summit: int = -1
    line: int = 0

    def window(self, width: int) -> tuple[int, int]:
        """The window of ``width`` bases centred on the summit, else on the centre (start may be < 0)."""
        centre = self.start + self.summit if self.summit >= 0 else (self.start + self.end) // 2
        start = centre - width // 2
        return start, start + width


def _is_header(line: str) -> bool:
    return not line.strip() or line.startswith(("#", "track", "browser"))


def read_peak(line: str, name: str, number: int, narrow: bool) -> Peak:
    """A :class:`Peak` from one line of BED3, BED6 or narrowPeak (``narrow``: column 10 is the
    summit); an InputError naming the file and line otherwise."""
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) < 3:
        fields = line.split()
    if len(fields) < 3:
        raise InputError(
            f"{name}, line {number}: a BED line needs at least 3 tab-separated columns (chrom, start, "
            f"end), found {len(fields)}: {line.strip()[:80]!r}"
        )
    chrom, start_text, end_text = (f.strip() for f in fields[:3])
    try:
        start, end = int(start_text), int(end_text)
    except ValueError:
        raise InputError(
            f"{name}, line {number}: start and end must be integers, got {start_text!r} and {end_text!r}"
        ) from None
    if not chrom or start < 0 or start >= end:
        raise InputError(
            f"{name}, line {number}: a region needs a chromosome name and 0 <= start < end, got {chrom!r} {start} {end}"
        )
    strand = fields[5].strip() if len(fields) > 5 else "."
    if strand not in ("+", "-", "."):
        raise InputError(f"{name}, line {number}: column 6 (strand) must be +, - or ., got {strand!r}")
    summit = -1
    if narrow:
        if len(fields) < 10:
            raise InputError(
                f"{name}, line {number}: a narrowPeak line has 10 columns (the 10th: the summit's "
                f"offset from start, -1 for none), found {len(fields)}"
            )
        try:
            summit = int(fields[9])
        except ValueError:
            raise InputError(
                f"{name}, line {number}: column 10 (summit offset) must be an integer, got {fields[9]!r}"
            ) from None
        if summit < -1 or summit >= end - start:
            raise InputError(
                f"{name}, line {number}: summit offset {summit} lies outside the peak's {end - start} "
                "bases (0-based offset from start; -1 for none)"
            )
    return Peak(chrom, start, end, strand, summit, number)


def _is_narrow_peak(path: Path) -> bool:
    name = path.name.lower()
    return (name[:-3] if name.endswith(".gz") else name).endswith(".narrowpeak")


def genome_identity(genome: str | Path, sizes: dict[str, int]) -> dict[str, Any]:
    """What identifies a genome in a run's manifest without hashing it: its file name, size, and
    its sequence names and lengths."""
    path = Path(genome)
    return {"name": path.name, "bytes": path.stat().st_size, "sequences": dict(sizes)}


class RegionWindows:
    """The windows of a peaks file over a genome, shard by shard (see the module docstring).

    ``read`` returns window ids and their sequences (upper case; reverse-complemented for ``-``
    regions), or :class:`~lrp_domains.domains.Unusable` items for windows off their chromosome."""

    def __init__(self, source: GenomeRegions, width: int | None = None) -> None:
        width = source.width if source.width is not None else width
        if width is None:
            raise InputError(
                "--regions: the model's input length is not known; give --width N (the number of bases the model takes)"
            )
        self.path = require_file(source.regions, "regions (BED or narrowPeak)")
        self.genome = require_file(source.genome, "genome FASTA")
        self.width = int(width)
        #: What rebuilds this reader on another machine (the width resolved).
        self.source = replace(source, width=self.width)
        self.narrow = _is_narrow_peak(self.path)
        self._sizes: dict[str, int] | None = None

    @property
    def sizes(self) -> dict[str, int]:
        """The genome's sequence names and lengths (from its index)."""
        if self._sizes is None:
            from lrp_domains.bio.sequences.genome import genome_sizes

            self._sizes = genome_sizes(self.genome)
        return self._sizes

    def _peaks(self, shard: Shard | None = None) -> Iterator[Peak]:
        offset, line = (shard.offset, shard.line) if shard is not None else (0, 1)
        with open_binary(self.path) as handle:
            for record in walk_records(handle, "line", self.path, offset, line):
                text = decode_line(record.lines[0], self.path, record.line)
                if _is_header(text):
                    continue
                yield read_peak(text, self.path.name, record.line, self.narrow)

    def shards(self, shard_size: int) -> list[Shard]:
        """Shards of ``shard_size`` regions; every line is checked here, before a run starts."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        starts: list[tuple[int, int]] = []
        count = 0
        with open_binary(self.path) as handle:
            for record in walk_records(handle, "line", self.path):
                text = decode_line(record.lines[0], self.path, record.line)
                if _is_header(text):
                    continue
                read_peak(text, self.path.name, record.line, self.narrow)
                if count % shard_size == 0:
                    starts.append((record.offset, record.line))
                count += 1
        if not count:
            raise InputError(f"{self.path.name} holds no regions (only blank, comment, track or browser lines)")
        return [
            Shard(i, i * shard_size, min((i + 1) * shard_size, count), offset, line)
            for i, (offset, line) in enumerate(starts)
        ]

    def read(self, shard: Shard) -> tuple[list[str], list[Any]]:
        """The ids and window sequences (or Unusable items) of one shard."""
        from lrp_domains.bio.sequences.genome import open_fasta

        ids: list[str] = []
        items: list[Any] = []
        genome, opened = open_fasta(self.genome)
        try:
            for peak in self._peaks(shard):
                start, end = peak.window(self.width)
                strand = "-" if peak.strand == "-" else "+"
                ids.append(f"{peak.chrom}:{start}-{end}({strand})")
                if peak.chrom not in self.sizes:
                    items.append(
                        Unusable(
                            UNKNOWN_CHROM,
                            f"{self.path.name}, line {peak.line}: {peak.chrom!r} is not "
                            f"a sequence of {self.genome.name}",
                        )
                    )
                elif start < 0 or end > self.sizes[peak.chrom]:
                    items.append(
                        Unusable(
                            OFF_CHROMOSOME,
                            f"{self.path.name}, line {peak.line}: the window "
                            f"{start}-{end} runs off {peak.chrom} (length "
                            f"{self.sizes[peak.chrom]})",
                        )
                    )
                else:
                    sequence = str(genome[peak.chrom][start:end]).upper()
                    items.append(sequence.translate(_COMPLEMENT)[::-1] if strand == "-" else sequence)
                if len(ids) == shard.size:
                    break
        finally:
            if opened:
                genome.close()
        return ids, items

    def fingerprint(self) -> dict[str, Any]:
        """The peaks file's SHA-256, the genome's identity (:func:`genome_identity`) and the width;
        ``path_genome`` says where the genome was (a moved genome is the same input)."""
        from lrp_domains.run.dataset import file_fingerprint

        return {
            **file_fingerprint(self.path),
            "genome": genome_identity(self.genome, self.sizes),
            "path_genome": str(self.genome.resolve()),
            "width": self.width,
        }
