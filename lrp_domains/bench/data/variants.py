"""A synthetic variant-effect benchmark: a small genome with planted JASPAR motifs and labelled SNVs.

:func:`make_variant_benchmark` writes, into one folder,

- ``genome.fa`` (+ ``genome.fa.fai``, written by ``pyfaidx``): ``n_chroms`` chromosomes of uniform random
  bases, each with its share of ``n_motifs`` JASPAR motifs planted at evenly spaced slots, on a random
  strand, every base sampled from the motif's PPM as :mod:`lrp_domains.bench.data.synthetic` samples it; by
  default the motifs of :data:`DETECTED_MOTIF_IDS`, those the default CNN learned to call positive;
- ``variants.vcf`` (``##fileformat=VCFv4.2``): one SNV per planted motif of each category,
  labelled in INFO (``CAT``, ``MOTIF``, ``MOTIF_ID``, ``DIST``):

  * ``break``: at a core column of the motif (information >= ``core_bits``, the planted base being the
    column's most probable one; the most informative such column), ALT the base that column disfavours
    most: the motif loses its best base;
  * ``flank``: 1 to ``max_flank`` bases outside the motif (left or right, at random), ALT any other base;
  * ``far``: more than ``window // 2`` bases from every planted motif (its window holds no motif base),
    ALT any other base; ``MOTIF`` is ``.``;
- ``variants.tsv``: the same variants as a side table (id, chrom, pos, ref, alt, category, motif_id,
  motif_name, motif_start, motif_end, strand, column, distance);
- ``motifs.bed``: the planted motifs (0-based, end exclusive, name = JASPAR name, strand).

Positions in the VCF and the side table are 1-based (VCF's POS); motif starts and ends 0-based.
Every variant's window (``window`` bases centred as :func:`lrp_domains.bio.variants.effects.variant_windows`
centres it) fits inside its chromosome. All randomness comes from one ``numpy.random.Generator(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lrp_domains.bench.data.synthetic import ALPHABET, information_content, motif_ppms
from lrp_domains.errors import InputError

__all__ = [
    "CATEGORIES",
    "DETECTED_MOTIF_IDS",
    "LabelledVariant",
    "PlantedMotif",
    "VariantBenchmark",
    "make_variant_benchmark",
]

#: The variant categories, in the order the VCF lists them per motif.
CATEGORIES = ("break", "flank", "far")

#: The synthetic motifs the default CNN calls positive on their own: one motif sampled from its PPM
#: in 200 random bases gives a positive logit in 68% (ELK1) to 95% (NFKB1) of sequences
#: (``make_dataset(200, seed=5, positive_fraction=1, motifs_per_sequence=(1, 1))`` per motif), against
#: 15% (GATA1) to 45% (MEF2A) for the other four of :data:`~lrp_domains.bench.data.synthetic.MOTIF_IDS`
#: (GATA1, FOXA1, MEF2A, Yy1) and 9% for background alone. A variant cannot break, for the model, a
#: motif the model does not see; ``tests/test_variant_benchmark.py`` re-measures the split.
DETECTED_MOTIF_IDS: tuple[str, ...] = ("MA0139.2", "MA0079.5", "MA0466.4", "MA0028.3", "MA0105.4", "MA0138.3")


class PlantedMotif(NamedTuple):
    """One planted motif: ``chrom``, 0-based ``start`` and exclusive ``end`` on the forward strand,
    ``strand`` (``"-"``: the forward bases are the reverse complement of a PPM sample), JASPAR
    ``motif_id`` and ``name``, and the ``ppm`` as it reads on the forward strand ``(4, width)``."""

    chrom: str
    start: int
    end: int
    strand: str
    motif_id: str
    name: str
    ppm: np.ndarray


class LabelledVariant(NamedTuple):
    """One benchmark SNV: 1-based ``pos``; ``category`` in :data:`CATEGORIES`; ``motif`` the index
    of its planted motif in :attr:`VariantBenchmark.motifs` (-1 for ``far``); ``column`` the motif
    column hit by a ``break`` (forward-strand index, else -1); ``distance`` bases from the nearest
    planted motif base (0 inside a motif)."""

    id: str
    chrom: str
    pos: int
    ref: str
    alt: str
    category: str
    motif: int
    column: int
    distance: int


@dataclass
class VariantBenchmark:
    """What :func:`make_variant_benchmark` wrote: the paths, the genome, the planted motifs and the variants."""

    fasta: Path
    vcf: Path
    table: Path
    bed: Path
    window: int
    chromosomes: dict[str, str]
    motifs: list[PlantedMotif]
    variants: list[LabelledVariant] = field(default_factory=list)

    def motif_name(self, variant: LabelledVariant) -> str:
        """The JASPAR name of ``variant``'s planted motif (``""`` for a ``far`` variant)."""
        return self.motifs[variant.motif].name if variant.motif >= 0 else ""

    def labels(self) -> dict[str, tuple[str, str]]:
        """``variant id -> (category, planted motif name)`` (the name ``""`` for ``far``)."""
        return {v.id: (v.category, self.motif_name(v)) for v in self.variants}


def _sample(columns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One base code per column of ``columns`` ``(4, W)`` (inverse CDF, one uniform per column)."""
    cdf = np.cumsum(columns, axis=0)
    return (rng.random(columns.shape[1])[None, :] >= cdf[:3]).sum(axis=0)


def _check(n_chroms: int, chrom_length: int, n_motifs: int, window: int, max_flank: int, widest: int) -> int:
    """Validate the sizes; return the slot (bases per motif) each chromosome gets."""
    if n_chroms < 1 or n_motifs < 1:
        raise InputError(f"n_chroms={n_chroms}, n_motifs={n_motifs}: give at least one chromosome and one motif")
    if window < 16:
        raise InputError(f"window={window}: give at least 16 bases (the default CNN's smallest input)")
    if max_flank < 1:
        raise InputError(f"max_flank={max_flank}: give at least 1 base")
    per_chrom = -(-n_motifs // n_chroms)
    slot = (chrom_length - 2 * window) // per_chrom
    need = widest + window + 2 * max_flank + 4
    if slot < need:
        raise InputError(
            f"chrom_length={chrom_length} cannot hold {per_chrom} motifs per chromosome with room for a "
            f"far variant between them; use chrom_length >= {2 * window + per_chrom * need}, more "
            "chromosomes or fewer motifs"
        )
    return slot


def make_variant_benchmark(
    out_dir: str | Path,
    n_chroms: int = 2,
    chrom_length: int = 6000,
    n_motifs: int = 40,
    seed: int = 0,
    window: int = 200,
    motif_ids: list[str] | None = None,
    core_bits: float = 1.0,
    max_flank: int = 5,
) -> VariantBenchmark:
    """Write the benchmark (module docstring) into ``out_dir`` and return it.

    ``n_motifs`` motifs are spread over ``n_chroms`` chromosomes of ``chrom_length`` bases (the first
    chromosomes get one more when they do not divide evenly), each drawn uniformly from ``motif_ids``
    (default :data:`DETECTED_MOTIF_IDS`: CTCF, SP1, CEBPB, ELK1, NFKB1, REST); one ``break``, one
    ``flank`` and one ``far`` variant per motif. ``window``: the model's window (far variants are
    farther than ``window // 2`` from every motif, and every variant's window fits in its chromosome).
    ``core_bits``: the least information of a column a ``break`` may hit; ``max_flank``: the farthest a
    ``flank`` variant sits from its motif. An InputError when the chromosomes are too short for the
    motifs, or for an unknown motif ID.
    """
    import pyfaidx

    try:
        ppms = motif_ppms(list(motif_ids) if motif_ids is not None else list(DETECTED_MOTIF_IDS))
    except KeyError as error:
        raise InputError(f"motif_ids: {error.args[0]}") from None
    if not ppms:
        raise InputError("motif_ids: give at least one motif ID")
    catalogue = [(motif_id, name, ppm) for motif_id, (name, ppm) in ppms.items()]
    widest = max(ppm.shape[1] for _, _, ppm in catalogue)
    slot = _check(n_chroms, chrom_length, n_motifs, window, max_flank, widest)
    half = window // 2
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    chromosomes: dict[str, str] = {}
    motifs: list[PlantedMotif] = []
    counts = [n_motifs // n_chroms + (1 if c < n_motifs % n_chroms else 0) for c in range(n_chroms)]
    for c, count in enumerate(counts):
        chrom = f"chr{c + 1}"
        codes = rng.integers(0, 4, size=chrom_length)
        for k in range(count):
            motif_id, name, ppm = catalogue[int(rng.integers(len(catalogue)))]
            strand = "-" if rng.random() < 0.5 else "+"
            columns = ppm if strand == "+" else ppm[::-1, ::-1]
            width = columns.shape[1]
            start = window + k * slot + (slot - width) // 2
            codes[start : start + width] = _sample(columns, rng)
            motifs.append(PlantedMotif(chrom, start, start + width, strand, motif_id, name, columns.copy()))
        chromosomes[chrom] = "".join(ALPHABET[int(i)] for i in codes)

    variants = _variants(chromosomes, motifs, rng, half, window, core_bits, max_flank)
    fasta = _write_fasta(out / "genome.fa", chromosomes)
    pyfaidx.Fasta(str(fasta)).close()  # writes genome.fa.fai
    vcf = _write_vcf(out / "variants.vcf", chromosomes, motifs, variants)
    table = _write_table(out / "variants.tsv", motifs, variants)
    bed = out / "motifs.bed"
    bed.write_text("".join(f"{m.chrom}\t{m.start}\t{m.end}\t{m.name}\t0\t{m.strand}\n" for m in motifs))
    return VariantBenchmark(fasta, vcf, table, bed, window, chromosomes, motifs, variants)


def _other_base(ref: str, rng: np.random.Generator) -> str:
    choices = [b for b in ALPHABET if b != ref]
    return choices[int(rng.integers(len(choices)))]


def _distance(pos0: int, chrom: str, motifs: list[PlantedMotif]) -> int:
    """Bases from 0-based ``pos0`` to the nearest planted base on ``chrom`` (0 inside a motif)."""
    best = 1 << 60
    for m in motifs:
        if m.chrom == chrom:
            best = min(best, max(m.start - pos0, pos0 - (m.end - 1), 0))
    return best


def _variants(
    chromosomes: dict[str, str],
    motifs: list[PlantedMotif],
    rng: np.random.Generator,
    half: int,
    window: int,
    core_bits: float,
    max_flank: int,
) -> list[LabelledVariant]:
    found: list[tuple[str, int, str, str, int, int]] = []  # chrom, pos0, alt, category, motif, column
    for index, m in enumerate(motifs):
        sequence = chromosomes[m.chrom]
        bits = information_content(m.ppm)
        planted = np.array([ALPHABET.index(b) for b in sequence[m.start : m.end]])
        consensus = m.ppm.argmax(0)
        core = np.flatnonzero((bits >= core_bits) & (planted == consensus))
        if len(core) == 0:  # the sample missed every strong column's consensus: use the strongest column
            column = int(bits.argmax())
        else:
            column = int(core[np.argmax(bits[core])])
        alt = ALPHABET[int(m.ppm[:, column].argmin())]
        found.append((m.chrom, m.start + column, alt, "break", index, column))
        offset = int(rng.integers(1, max_flank + 1))
        pos0 = m.start - offset if rng.random() < 0.5 else m.end - 1 + offset
        found.append((m.chrom, pos0, _other_base(sequence[pos0], rng), "flank", index, -1))
    for chrom, sequence in chromosomes.items():
        mine = [m for m in motifs if m.chrom == chrom]
        allowed = np.ones(len(sequence), dtype=bool)
        allowed[:half] = False
        allowed[len(sequence) - (window - half) + 1 :] = False
        for m in mine:
            allowed[max(0, m.start - half) : m.end + half] = False
        candidates = np.flatnonzero(allowed)
        for pos0 in np.sort(rng.choice(candidates, size=min(len(mine), len(candidates)), replace=False)):
            found.append((chrom, int(pos0), _other_base(sequence[int(pos0)], rng), "far", -1, -1))
    found.sort(key=lambda row: (int(row[0][3:]), row[1]))
    numbers = {category: 0 for category in CATEGORIES}
    variants = []
    for chrom, pos0, alt, category, motif, column in found:
        numbers[category] += 1
        variants.append(
            LabelledVariant(
                f"{category}_{numbers[category]:04d}",
                chrom,
                pos0 + 1,
                chromosomes[chrom][pos0],
                alt,
                category,
                motif,
                column,
                _distance(pos0, chrom, motifs),
            )
        )
    return variants


def _write_fasta(path: Path, chromosomes: dict[str, str], width: int = 60) -> Path:
    with open(path, "w") as handle:
        for chrom, sequence in chromosomes.items():
            handle.write(f">{chrom} synthetic chromosome with planted JASPAR motifs\n")
            for i in range(0, len(sequence), width):
                handle.write(sequence[i : i + width] + "\n")
    return path


def _write_vcf(
    path: Path, chromosomes: dict[str, str], motifs: list[PlantedMotif], variants: list[LabelledVariant]
) -> Path:
    lines = ["##fileformat=VCFv4.2", "##source=lrp_domains.bench.data.variants"]
    lines += [f"##contig=<ID={chrom},length={len(sequence)}>" for chrom, sequence in chromosomes.items()]
    lines += [
        '##INFO=<ID=CAT,Number=1,Type=String,Description="break (motif core), flank (next to a motif) or far">',
        '##INFO=<ID=MOTIF,Number=1,Type=String,Description="JASPAR name of the planted motif (. for far)">',
        '##INFO=<ID=MOTIF_ID,Number=1,Type=String,Description="JASPAR matrix ID of the planted motif">',
        '##INFO=<ID=DIST,Number=1,Type=Integer,Description="Bases to the nearest planted motif base">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    for v in variants:
        name, ident = (motifs[v.motif].name, motifs[v.motif].motif_id) if v.motif >= 0 else (".", ".")
        lines.append(
            f"{v.chrom}\t{v.pos}\t{v.id}\t{v.ref}\t{v.alt}\t.\tPASS\t"
            f"CAT={v.category};MOTIF={name};MOTIF_ID={ident};DIST={v.distance}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_table(path: Path, motifs: list[PlantedMotif], variants: list[LabelledVariant]) -> Path:
    rows = [
        "\t".join(
            (
                "id",
                "chrom",
                "pos",
                "ref",
                "alt",
                "category",
                "motif_id",
                "motif_name",
                "motif_start",
                "motif_end",
                "strand",
                "column",
                "distance",
            )
        )
    ]
    for v in variants:
        m = motifs[v.motif] if v.motif >= 0 else None
        rows.append(
            "\t".join(
                str(x)
                for x in (
                    v.id,
                    v.chrom,
                    v.pos,
                    v.ref,
                    v.alt,
                    v.category,
                    m.motif_id if m else "",
                    m.name if m else "",
                    m.start if m else "",
                    m.end if m else "",
                    m.strand if m else "",
                    v.column,
                    v.distance,
                )
            )
        )
    path.write_text("\n".join(rows) + "\n")
    return path
