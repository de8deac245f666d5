"""Synthetic ground-truth DNA: JASPAR motifs planted into uniform random sequences.

A benchmark for sequence attributions in the spirit of Koo & Ploenzke (2021), "Improving representations
of genomic sequence motifs in convolutional networks with exponential activations", *Nature Machine
Intelligence* 3, 258-266: their synthetic data plant JASPAR motifs into random DNA, so that every sequence
comes with the positions that carry the signal. Here the task is binary and kept clean:

* **positives** (label 1): ``motifs_per_sequence`` (default 1 to 3) motifs, each drawn uniformly from
  :data:`MOTIF_IDS`, sampled base by base from its position probability matrix (PPM) at a uniformly random
  non-overlapping position, on a random strand (minus: the reverse complement of the PPM);
* **negatives** (label 0): background only;
* **background**: i.i.d. uniform bases (probability 0.25 each).

Every sequence also carries its generating distribution ``pwm`` (``(4, L)``: 0.25 for background, the
planted PPM column otherwise) and the ground truth ``truth``: positions whose generating column carries
more than :data:`TRUTH_BITS` bits of information (``2 + sum p log2 p``). Background columns carry 0 bits,
so ``truth`` is exactly the informative positions inside the placements, and negatives have none.

The PPMs come from JASPAR 2024 CORE vertebrate matrices; their counts are stored in this module
(:data:`JASPAR_COUNTS`, copied from ``pyjaspar``'s JASPAR2024 release; ``tests/test_bio_synthetic.py``
checks them against ``pyjaspar`` where it is installed), so generating data needs neither ``pyjaspar``
nor a network. A PPM is the counts normalised per column with a small pseudocount
(:data:`PSEUDOCOUNT` on the frequency scale, independent of the number of sites).

All randomness comes from one ``numpy.random.Generator(PCG64(seed))`` consumed in a fixed order, so the
same arguments give the same data on every run and machine (NumPy keeps ``Generator`` streams stable;
:func:`fingerprint` gives a checksum to compare).

Example::

    from lrp_domains.bench.data.synthetic import make_dataset, write_fasta
    data = make_dataset(1000, seed=0)
    data.onehot.shape, data.truth.shape          # (1000, 4, 200), (1000, 200)
    write_fasta("synthetic.fa", data)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "ALPHABET",
    "JASPAR_COUNTS",
    "JASPAR_RELEASE",
    "MOTIF_IDS",
    "PSEUDOCOUNT",
    "TRUTH_BITS",
    "Placement",
    "SyntheticDataset",
    "fingerprint",
    "information_content",
    "make_dataset",
    "motif_ppms",
    "read_synthetic_fasta",
    "write_fasta",
]

#: Base order of the one-hot rows and PPM rows.
ALPHABET = "ACGT"
#: The JASPAR release the matrices were taken from.
JASPAR_RELEASE = "JASPAR2024"
#: A position is ground truth when its generating column carries more than this many bits.
TRUTH_BITS = 0.1
#: Added to every base frequency of a JASPAR column before renormalising (no zero probabilities).
PSEUDOCOUNT = 1e-3

#: JASPAR2024 CORE vertebrate matrices: ``matrix ID -> (name, counts)``, counts as rows A, C, G, T.
#: Latest version of each matrix in the release; copied verbatim from ``pyjaspar`` (``jaspardb(release=
#: "JASPAR2024").fetch_motif_by_id(id).counts``).
JASPAR_COUNTS: dict[str, tuple[str, tuple[tuple[float, ...], ...]]] = {
    "MA0139.2": (
        "CTCF",
        (
            (281, 56, 8, 744, 40, 107, 851, 5, 333, 54, 12, 56, 104, 372, 82),
            (49, 800, 903, 13, 528, 433, 11, 0, 3, 12, 0, 8, 733, 13, 482),
            (449, 21, 0, 65, 334, 48, 32, 903, 566, 504, 890, 775, 5, 507, 307),
            (134, 36, 2, 91, 11, 324, 18, 3, 9, 341, 8, 71, 67, 17, 37),
        ),
    ),
    "MA0035.5": (
        "GATA1",
        (
            (3953, 1314, 49692, 67550, 2206, 2567, 7397),
            (62419, 595, 710, 1292, 1238, 65937, 3025),
            (2712, 652, 856, 988, 618, 1471, 765),
            (2744, 69267, 20570, 1998, 67766, 1853, 60641),
        ),
    ),
    "MA0079.5": (
        "SP1",
        (
            (1.05485, 1.05485, 1.05485, 1.05485, 266.878, 1.05485, 1.05485, 254.219, 161.392),
            (1.05485, 1.05485, 1.05485, 1.05485, 731.013, 1.05485, 85.443, 51.6878, 1.05485),
            (950.422, 996.835, 996.835, 996.835, 1.05485, 996.835, 912.447, 659.283, 836.498),
            (47.4684, 1.05485, 1.05485, 1.05485, 1.05485, 1.05485, 1.05485, 34.8101, 1.05485),
        ),
    ),
    "MA0466.4": (
        "CEBPB",
        (
            (8993, 1, 0, 1855, 0, 101, 185, 11810, 11810, 2),
            (738, 2, 0, 1, 11810, 8, 10010, 81, 1, 2844),
            (2817, 0, 79, 9955, 2, 11810, 3, 0, 0, 737),
            (7, 11810, 11810, 182, 110, 0, 1800, 0, 0, 8966),
        ),
    ),
    "MA0028.3": (
        "ELK1",
        (
            (45807, 1217, 359, 0, 4, 45807, 45807, 3016, 916),
            (2750, 45807, 45807, 21, 41, 233, 333, 2361, 6309),
            (12959, 1478, 59, 45807, 45807, 62, 60, 45807, 1123),
            (5718, 236, 21, 26, 713, 25, 2165, 294, 45807),
        ),
    ),
    "MA0148.5": (
        "FOXA1",
        (
            (23286, 11061, 297679, 294900, 312906, 7396, 308904, 42299),
            (5935, 13932, 14648, 13410, 2452, 272943, 3674, 23038),
            (281612, 6092, 5243, 3774, 3652, 4805, 3226, 27283),
            (11970, 291718, 5233, 10719, 3793, 37659, 6999, 230183),
        ),
    ),
    "MA0052.5": (
        "MEF2A",
        (
            (1984, 627, 12437, 13132, 14680, 14453, 14956, 441, 15582, 2566),
            (10919, 2974, 1013, 253, 141, 231, 173, 349, 50, 1060),
            (1007, 236, 1066, 610, 506, 241, 202, 215, 422, 11104),
            (2252, 12325, 1646, 2167, 835, 1237, 831, 15157, 108, 1432),
        ),
    ),
    "MA0105.4": (
        "NFKB1",
        (
            (8441, 9, 0, 4, 229, 12004, 7003, 22, 17, 497, 4, 6, 1231),
            (2013, 0, 3, 0, 3, 62, 18, 1311, 9574, 9536, 9591, 9642, 1293),
            (990, 19047, 19177, 19167, 19458, 821, 32, 116, 4, 1, 1, 2, 3348),
            (818, 5, 2, 318, 27, 27, 6744, 14372, 130, 3, 2, 8, 9386),
        ),
    ),
    "MA0138.3": (
        "REST",
        (
            (58, 76, 1452, 34, 122, 1575, 3, 35, 913, 219, 39, 20, 1406, 13, 1574, 42, 205, 366, 213, 179),
            (269, 1366, 30, 44, 978, 7, 1586, 1481, 201, 375, 7, 5, 112, 1280, 9, 13, 1007, 31, 933, 1114),
            (146, 50, 94, 1516, 323, 12, 12, 20, 162, 124, 1551, 1577, 34, 233, 7, 1530, 183, 688, 319, 37),
            (1124, 105, 26, 10, 182, 12, 5, 70, 329, 886, 7, 2, 51, 74, 10, 9, 198, 507, 125, 260),
        ),
    ),
    "MA0095.4": (
        "Yy1",
        (
            (3123, 41529, 39666, 30769, 41506, 689, 561, 1597),
            (33122, 926, 1447, 2536, 746, 241, 165, 971),
            (3684, 287, 1320, 8658, 712, 708, 42263, 39612),
            (3419, 606, 915, 1385, 384, 41710, 359, 1168),
        ),
    ),
}

#: The planted motifs, in this order (index = motif number used by the generator).
MOTIF_IDS: list[str] = list(JASPAR_COUNTS)


class Placement(NamedTuple):
    """One planted motif: JASPAR matrix ID, its name, 0-based start and strand (``"+"`` or ``"-"``).

    The motif covers ``start .. start + width - 1`` (width: the PPM's number of columns) on the given
    strand; on ``"-"`` the forward-strand bases are the reverse complement of a sample from the PPM.
    """

    motif_id: str
    name: str
    start: int
    strand: str


@dataclass
class SyntheticDataset:
    """Synthetic sequences with their labels and ground truth (``N`` sequences of length ``L``).

    Attributes
    ----------
    onehot:
        ``(N, 4, L)`` float32 one-hot, rows in :data:`ALPHABET` order (A, C, G, T), length last.
    labels:
        ``(N,)`` long: 1 = motif(s) planted, 0 = background only.
    pwm:
        ``(N, 4, L)`` float32: the probability each base had of being drawn at each position (0.25 in
        the background, the PPM column where a motif was sampled, reverse-complemented on ``"-"``).
    truth:
        ``(N, L)`` bool: positions whose ``pwm`` column carries more than :data:`TRUTH_BITS` bits.
    placements:
        Per sequence, the planted motifs (:class:`Placement`), sorted by start; empty for negatives.
    sequences:
        The sequences as strings (``ACGT``).
    ids:
        Sequence names (``synth_000123``, or ``synth_pos_00`` / ``synth_neg_01`` with ``id_style="labelled"``).
    """

    onehot: torch.Tensor
    labels: torch.Tensor
    pwm: torch.Tensor
    truth: torch.Tensor
    placements: list[list[Placement]]
    sequences: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.sequences)

    def subset(self, index: Sequence[int] | slice | np.ndarray | torch.Tensor) -> SyntheticDataset:
        """The sequences at ``index`` (a slice, or integer positions), in that order."""
        if isinstance(index, slice):
            rows = list(range(len(self)))[index]
        else:
            rows = [int(i) for i in (index.tolist() if hasattr(index, "tolist") else index)]
        take = torch.as_tensor(rows, dtype=torch.long)
        return SyntheticDataset(
            onehot=self.onehot[take],
            labels=self.labels[take],
            pwm=self.pwm[take],
            truth=self.truth[take],
            placements=[list(self.placements[i]) for i in rows],
            sequences=[self.sequences[i] for i in rows],
            ids=[self.ids[i] for i in rows],
        )


def motif_ppms(motif_ids: Sequence[str] | None = None) -> dict[str, tuple[str, np.ndarray]]:
    """``matrix ID -> (name, PPM)`` for :data:`MOTIF_IDS` (or the given subset), PPMs ``(4, width)``
    float64 with rows A, C, G, T: column frequencies plus :data:`PSEUDOCOUNT`, renormalised to sum 1.

    Fresh arrays on every call (safe to modify).
    """
    wanted = MOTIF_IDS if motif_ids is None else list(motif_ids)
    unknown = [m for m in wanted if m not in JASPAR_COUNTS]
    if unknown:
        raise KeyError(f"unknown motif IDs {unknown}; available: {MOTIF_IDS}")
    result: dict[str, tuple[str, np.ndarray]] = {}
    for motif_id in wanted:
        name, counts = JASPAR_COUNTS[motif_id]
        array = np.asarray(counts, dtype=np.float64)
        frequencies = array / array.sum(axis=0, keepdims=True)
        ppm = frequencies + PSEUDOCOUNT
        result[motif_id] = (name, ppm / ppm.sum(axis=0, keepdims=True))
    return result


def information_content(columns: np.ndarray | torch.Tensor) -> np.ndarray:
    """Bits per column of probabilities with the bases on axis ``-2``: ``2 + sum p log2 p`` (0 log 0 = 0).

    Computed in float64; accepts a PPM ``(4, W)`` or a batch ``(N, 4, L)``.
    """
    p = columns.detach().cpu().numpy() if isinstance(columns, torch.Tensor) else np.asarray(columns)
    p = p.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return 2.0 + terms.sum(axis=-2)


def _oriented(ppm: np.ndarray, strand: str) -> np.ndarray:
    """The PPM as it reads on the forward strand: reversed and complemented (A<->T, C<->G) on ``"-"``."""
    return ppm if strand == "+" else ppm[::-1, ::-1]


def _sample_columns(columns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One base code (0..3) per column of ``columns`` ``(4, W)``: inverse-CDF sampling, one uniform each."""
    cdf = np.cumsum(columns, axis=0)
    u = rng.random(columns.shape[1])
    return (u[None, :] >= cdf[:3]).sum(axis=0).astype(np.int8)


def _ids(labels: np.ndarray, id_style: str) -> list[str]:
    n = len(labels)
    if id_style == "index":
        width = max(6, len(str(n - 1)))
        return [f"synth_{i:0{width}d}" for i in range(n)]
    width = max(2, len(str(n - 1)))
    return [f"synth_{'pos' if y else 'neg'}_{i:0{width}d}" for i, y in enumerate(labels)]


def make_dataset(
    n: int,
    length: int = 200,
    seed: int = 0,
    positive_fraction: float = 0.5,
    motifs_per_sequence: tuple[int, int] = (1, 3),
    motif_ids: Sequence[str] | None = None,
    id_style: str = "index",
) -> SyntheticDataset:
    """``n`` synthetic sequences of ``length`` bases: JASPAR motifs planted into uniform background.

    Parameters
    ----------
    n:
        Number of sequences.
    length:
        Bases per sequence.
    seed:
        Seed of the ``numpy.random.Generator``; the same arguments always give the same data.
    positive_fraction:
        Exactly ``round(n * positive_fraction)`` sequences are positives, at seeded random positions.
    motifs_per_sequence:
        ``(low, high)``: each positive gets a uniformly drawn number of motifs in ``low .. high``
        (inclusive, ``low >= 1``), each motif drawn uniformly (with replacement) from ``motif_ids``,
        placed at a uniformly random start among those that overlap no earlier motif, strand ``+`` or
        ``-`` with probability 1/2.
    motif_ids:
        The motifs to plant (default :data:`MOTIF_IDS`).
    id_style:
        ``"index"`` (``synth_000123``) or ``"labelled"`` (``synth_pos_00``, ``synth_neg_01``: the label
        and the index in the data set).

    Random draws, in order: the positives (one permutation), all background bases (one ``(n, length)``
    array), then per positive sequence in index order: its number of motifs, its motifs, and per motif
    its start, strand and bases.
    """
    n, length = int(n), int(length)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    low, high = (int(v) for v in motifs_per_sequence)
    if not 1 <= low <= high:
        raise ValueError(f"motifs_per_sequence must be (low, high) with 1 <= low <= high, got {motifs_per_sequence}")
    if id_style not in ("index", "labelled"):
        raise ValueError(f"id_style must be 'index' or 'labelled', got {id_style!r}")
    ppms = motif_ppms(motif_ids)
    catalogue = [(motif_id, name, ppm) for motif_id, (name, ppm) in ppms.items()]
    widest = max(ppm.shape[1] for _, _, ppm in catalogue)
    if length < high * widest:
        raise ValueError(
            f"length {length} cannot always hold {high} motifs of up to {widest} bases; "
            f"use length >= {high * widest} or fewer motifs per sequence"
        )

    rng = np.random.default_rng(seed)
    n_positive = int(round(n * positive_fraction))
    labels = np.zeros(n, dtype=np.int64)
    labels[rng.permutation(n)[:n_positive]] = 1
    codes = rng.integers(0, 4, size=(n, length), dtype=np.int8)
    pwm = np.full((n, 4, length), 0.25, dtype=np.float32)
    placements: list[list[Placement]] = [[] for _ in range(n)]

    for i in np.flatnonzero(labels):
        occupied = np.zeros(length + 1, dtype=np.int64)  # prefix sums of covered positions
        covered = np.zeros(length, dtype=bool)
        count = int(rng.integers(low, high + 1))
        chosen = rng.integers(0, len(catalogue), size=count)
        planted = []
        for k in chosen:
            motif_id, name, ppm = catalogue[int(k)]
            width = ppm.shape[1]
            np.cumsum(covered, out=occupied[1:])
            free = np.flatnonzero(occupied[width:] - occupied[:-width] == 0)  # starts with no covered base
            if len(free) == 0:  # cannot happen while length >= high * widest; kept as a guard
                raise RuntimeError(f"no room left for {motif_id} in sequence {i}")
            start = int(free[rng.integers(len(free))])
            strand = "-" if rng.random() < 0.5 else "+"
            columns = _oriented(ppm, strand)
            codes[i, start : start + width] = _sample_columns(columns, rng)
            pwm[i, :, start : start + width] = columns
            covered[start : start + width] = True
            planted.append(Placement(motif_id, name, start, strand))
        placements[i] = sorted(planted, key=lambda p: p.start)

    onehot = np.zeros((n, 4, length), dtype=np.float32)
    np.put_along_axis(onehot, codes[:, None, :].astype(np.int64), 1.0, axis=1)
    letters = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)[codes.astype(np.int64)]
    sequences = [row.tobytes().decode() for row in letters]
    truth = information_content(pwm) > TRUTH_BITS
    return SyntheticDataset(
        onehot=torch.from_numpy(onehot),
        labels=torch.from_numpy(labels),
        pwm=torch.from_numpy(pwm),
        truth=torch.from_numpy(truth),
        placements=placements,
        sequences=sequences,
        ids=_ids(labels, id_style),
    )


def fingerprint(data: SyntheticDataset) -> str:
    """SHA-256 (hex) of the ids, labels, sequences and placements: equal fingerprints, equal data."""
    digest = hashlib.sha256()
    for name, label, sequence, planted in zip(data.ids, data.labels.tolist(), data.sequences, data.placements):
        digest.update(f"{name}\t{label}\t{sequence}\t{_placements_text(planted)}\n".encode())
    return digest.hexdigest()


def _placements_text(planted: Sequence[Placement]) -> str:
    return ",".join(f"{p.motif_id}/{p.name}/{p.start}/{p.strand}" for p in planted) or "none"


def write_fasta(path: str | Path, data: SyntheticDataset, line_width: int = 0) -> Path:
    """Write ``data`` as FASTA; returns the path.

    Header: ``>ID label=1 motifs=MA0139.2/CTCF/34/+,MA0079.5/SP1/120/-`` (matrix ID / name / 0-based
    start / strand per placement, ``motifs=none`` for negatives), enough for :func:`read_synthetic_fasta` to
    rebuild ``pwm`` and ``truth``. ``line_width`` wraps the sequence lines (0: one line per sequence).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, label, sequence, planted in zip(data.ids, data.labels.tolist(), data.sequences, data.placements):
        lines.append(f">{name} label={label} motifs={_placements_text(planted)}")
        if line_width and line_width > 0:
            lines.extend(sequence[j : j + line_width] for j in range(0, len(sequence), line_width))
        else:
            lines.append(sequence)
    path.write_text("\n".join(lines) + "\n")
    return path


def read_synthetic_fasta(path: str | Path) -> SyntheticDataset:
    """Read a FASTA written by :func:`write_fasta` back into a :class:`SyntheticDataset` (records
    by :class:`~lrp_domains.files.fasta.FastaRecords`, the one FASTA reader).

    ``pwm`` and ``truth`` are rebuilt from the placements in the headers and :func:`motif_ppms`; the
    result equals the data that was written.
    """
    from lrp_domains.bio.sequences.onehot import one_hot
    from lrp_domains.files.fasta import FastaRecords

    ids, labels, sequences, placements = [], [], [], []
    for record in FastaRecords(path):
        fields = dict(item.split("=", 1) for item in record.description.split() if "=" in item)
        if "label" not in fields or "motifs" not in fields:
            raise ValueError(f"{record.id}: header lacks label=/motifs= (not written by write_fasta)")
        planted = []
        if fields["motifs"] != "none":
            for item in fields["motifs"].split(","):
                motif_id, name, start, strand = item.rsplit("/", 3)
                planted.append(Placement(motif_id, name, int(start), strand))
        ids.append(record.id)
        labels.append(int(fields["label"]))
        sequences.append(record.sequence.upper())
        placements.append(planted)
    if not sequences:
        raise ValueError(f"{path} contains no FASTA records")
    lengths = {len(s) for s in sequences}
    if len(lengths) != 1:
        raise ValueError(f"{path}: sequences of different lengths {sorted(lengths)[:5]}")
    length = lengths.pop()
    onehot = one_hot(sequences, ALPHABET, ids=ids).numpy()
    pwm = np.full((len(sequences), 4, length), 0.25, dtype=np.float32)
    ppms = motif_ppms(sorted({p.motif_id for planted in placements for p in planted}))
    for i, planted in enumerate(placements):
        for p in planted:
            columns = _oriented(ppms[p.motif_id][1], p.strand)
            pwm[i, :, p.start : p.start + columns.shape[1]] = columns
    return SyntheticDataset(
        onehot=torch.from_numpy(onehot),
        labels=torch.tensor(labels, dtype=torch.long),
        pwm=torch.from_numpy(pwm),
        truth=torch.from_numpy(information_content(pwm) > TRUTH_BITS),
        placements=placements,
        sequences=sequences,
        ids=ids,
    )
