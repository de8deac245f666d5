"""Variant effects with relevance: a reference and an alternative window per variant, both explained.

:func:`read_vcf` streams the variants of a VCF (plain or gzipped), one record per ALT allele;
:func:`variant_windows` cuts the reference window around a variant from an indexed FASTA
(``pyfaidx``, random access: the genome is never read into memory whole) and builds the
alternative window; :func:`explain_variants` explains both windows of every variant and returns one
row per variant and allele, sorted by the size of the effect.

Conventions
-----------
Positions: ``pos`` is VCF's POS, 1-based; ``p = pos - 1`` is the variant's first base, 0-based.

Centring: the reference window holds ``window`` bases of the genome, ``[p - window // 2,
p - window // 2 + window)``, so the variant's first base (the first base of REF) sits at index
``c = window // 2`` of the window (index 100 of a 200-bp window; index 2 of a 5-bp one).

Alternative window: the same left part (the ``c`` genome bases before the variant), then ALT at
index ``c``, then the genome from the base right after REF, ``p + len(REF)``, onwards, cut so the
window again has exactly ``window`` bases. For an SNV this is the reference window with the one
base at ``c`` replaced. A deletion (ALT shorter than REF) pulls ``len(REF) - len(ALT)`` more genome
bases in on the right; an insertion (ALT longer) pushes as many out of the right end. The left part
and the variant's position never move, so relevance at index ``c`` onwards compares allele to allele.

Status (one per record, ``"ok"`` or why the record was not explained; such rows get NaN scores):

- ``"ok"``: both windows built;
- ``"symbolic"``: a symbolic ALT (``<DEL>``, ``<INS:ME>``, ...), the spanning deletion ``*``, a
  breakend (``G]17:198982]``, ``.A``) or a missing ALT (``.``): nothing to place in a window;
- ``"unknown_chrom"``: CHROM is not a sequence of the FASTA;
- ``"chrom_end"``: the variant sits so near a chromosome end that a window (reference, or the
  alternative one refilled on the right) does not fit inside the chromosome;
- ``"too_long"``: REF or ALT is longer than the right part of the window (``window - window // 2``
  bases), so the allele would not fit;
- ``"ref_mismatch"``: REF differs from the genome at POS (compared case-insensitively; ``N`` in
  either matches nothing but ``N``);
- ``"ambiguous_base"``: a window holds a genome letter other than A, C, G, T, N (an IUPAC code
  such as R or Y), which the one-hot encoding cannot take; a :class:`VariantWarning` names the
  genome position (``chrom:pos``, 1-based).

A :class:`VariantWarning` also says when variants name chromosomes the genome does not have,
and suggests the fix when the names differ by a ``chr`` prefix (:func:`chrom_naming_hint`).

Windows are upper-cased (soft-masked genome letters become capitals).

Motifs: the motif each allele's window shows at the variant (``ref_motif``, ``alt_motif``, their
match p-values and ``motif_change``: lost, gained...), see :mod:`lrp_domains.bio.variants.motifs`.

Delta tracks (``delta_tracks=True``): per variant, the alternative window's relevance minus the
reference window's, per base of the *reference* window (:func:`aligned_delta`): bases left of the
variant compare position to position, ALT's total relevance is spread evenly over REF's bases,
and bases right of REF compare to the alternative window's bases shifted by the length change.
Its sum over REF's bases is ``delta_relevance``. :func:`variants_to_bigwig` writes them as a
bigWig in genome coordinates.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrp_domains.bio.sequences.genome import default_window, open_fasta
from lrp_domains.errors import InputError

if TYPE_CHECKING:
    import pandas as pd
    import pyfaidx

    from lrp_domains.bio.sequences.explainer import SequenceExplainer

__all__ = [
    "COLUMNS",
    "STATUSES",
    "TRACK_COLUMNS",
    "VariantRecord",
    "VariantWarning",
    "VariantWindows",
    "aligned_delta",
    "chrom_naming_hint",
    "explain_variants",
    "read_vcf",
    "variant_windows",
    "variants_to_bigwig",
]

#: Every status a record can get (see the module docstring).
STATUSES = ("ok", "symbolic", "unknown_chrom", "chrom_end", "too_long", "ref_mismatch", "ambiguous_base")
#: The columns of :func:`explain_variants`' table, in order.
COLUMNS = ("chrom", "pos", "id", "ref", "alt", "status", "ref_score", "alt_score", "delta_score", "delta_relevance")
#: The columns ``delta_tracks=True`` adds: the windows' first base (0-based) and the aligned delta.
TRACK_COLUMNS = ("window_start", "delta_track")

_BASES = frozenset("ACGTN")


class VariantWarning(UserWarning):
    """Variants that could not be explained for a reason in the genome or the naming of chromosomes
    (the command line prints these as one line each)."""


@dataclass(frozen=True)
class VariantRecord:
    """One ALT allele of one VCF line.

    ``pos`` is 1-based (VCF's POS); ``line`` the line number in the file (1-based); ``allele`` the
    allele's index in the line's ALT list (0 for the first); ``status`` ``"ok"`` or ``"symbolic"``.
    """

    chrom: str
    pos: int
    id: str
    ref: str
    alt: str
    line: int
    allele: int = 0
    status: str = "ok"


@dataclass(frozen=True)
class VariantWindows:
    """The two windows of a variant: ``ref`` and ``alt`` (``""`` unless ``status == "ok"``),
    ``start`` the 0-based genome position of the windows' first base, ``center`` the index of the
    variant's first base in both windows (``window // 2``)."""

    status: str
    ref: str = ""
    alt: str = ""
    start: int = -1
    center: int = -1
    #: Why the windows were not built, for a message (``"chr1:451: 'R'"`` for ``"ambiguous_base"``).
    detail: str = ""


def _is_symbolic(alt: str) -> bool:
    return (
        alt in (".", "*")
        or alt.startswith("<")
        or "[" in alt
        or "]" in alt
        or (len(alt) > 1 and (alt.startswith(".") or alt.endswith(".")))
    )


def _open_text(path: Path) -> Any:
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_vcf(path: str | Path) -> Iterator[VariantRecord]:
    """The variants of a VCF, lazily, one :class:`VariantRecord` per ALT allele.

    Plain or gzipped (bgzip too; told apart by content, not by suffix). Lines starting with ``#``
    (meta lines and the column header) and blank lines are skipped; the columns used are CHROM,
    POS, ID, REF, ALT (tab-separated; further columns are ignored). A multi-allelic ALT
    (``A,T``) gives one record per allele, in order. Symbolic alleles (see the module docstring)
    are kept with status ``"symbolic"``. A row with fewer than 5 columns, a POS that is not a
    positive integer, or a REF/ALT with letters other than A, C, G, T, N is an InputError naming
    the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such VCF file")
    name = path.name
    try:
        with _open_text(path) as handle:
            for number, text in enumerate(handle, start=1):
                text = text.rstrip("\r\n")
                if not text.strip() or text.startswith("#"):
                    continue
                yield from parse_vcf_line(text, name, number)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as error:
        raise InputError(f"{name}: not a readable VCF (plain text or gzip): {error}") from error


def parse_vcf_line(text: str, name: str, number: int) -> Iterator[VariantRecord]:
    """The records (one per ALT allele) of one VCF data line ``text``, line ``number`` of file
    ``name`` (for messages); see :func:`read_vcf`."""
    fields = text.split("\t")
    if len(fields) < 5:
        raise InputError(
            f"{name}, line {number}: expected tab-separated CHROM POS ID REF ALT, got "
            f"{len(fields)} column(s): {text[:80]!r}"
        )
    chrom, pos_text, ident, ref, alts = (f.strip() for f in fields[:5])
    if not chrom:
        raise InputError(f"{name}, line {number}: an empty CHROM")
    try:
        pos = int(pos_text)
    except ValueError:
        pos = 0
    if pos < 1:
        raise InputError(f"{name}, line {number}: POS must be a positive integer (1-based), got {pos_text!r}")
    ref = ref.upper()
    if not ref or not set(ref) <= _BASES:
        raise InputError(f"{name}, line {number}: REF {ref!r} must be bases A, C, G, T or N")
    if not alts:
        raise InputError(f"{name}, line {number}: an empty ALT (write '.' for none)")
    for k, alt in enumerate(alts.split(",")):
        if _is_symbolic(alt):
            yield VariantRecord(chrom, pos, ident, ref, alt, number, k, "symbolic")
            continue
        alt = alt.upper()
        if not alt or not set(alt) <= _BASES:
            raise InputError(
                f"{name}, line {number}: ALT allele {alt!r} must be bases A, C, G, T or N "
                "(or symbolic: <...>, *, a breakend)"
            )
        yield VariantRecord(chrom, pos, ident, ref, alt, number, k, "ok")


def variant_windows(record: VariantRecord, fasta: pyfaidx.Fasta, window: int) -> VariantWindows:
    """The reference and alternative windows of ``window`` bases around ``record`` (conventions
    and statuses in the module docstring), read from the indexed ``fasta``."""
    if window < 1:
        raise InputError(f"window={window}: give a positive number of bases")
    if record.status != "ok":
        return VariantWindows(record.status)
    if record.chrom not in fasta:
        return VariantWindows("unknown_chrom")
    center = window // 2
    if max(len(record.ref), len(record.alt)) > window - center:
        return VariantWindows("too_long")
    p = record.pos - 1
    start = p - center
    after = p + len(record.ref)
    refill = window - center - len(record.alt)
    size = len(fasta[record.chrom])
    if start < 0 or start + window > size or after + refill > size:
        return VariantWindows("chrom_end")
    sequence = fasta[record.chrom]
    ref_window = str(sequence[start : start + window]).upper()
    if ref_window[center : center + len(record.ref)] != record.ref.upper():
        return VariantWindows("ref_mismatch", start=start, center=center)
    right = str(sequence[after : after + refill]).upper() if refill > 0 else ""
    for offset, window_text in ((start, ref_window), (after, right)):
        odd = next((i for i, letter in enumerate(window_text) if letter not in _BASES), None)
        if odd is not None:
            return VariantWindows(
                "ambiguous_base",
                start=start,
                center=center,
                detail=f"{record.chrom}:{offset + odd + 1}: {window_text[odd]!r}",
            )
    alt_window = ref_window[:center] + record.alt.upper() + right
    return VariantWindows("ok", ref_window, alt_window, start, center)


def explain_variants(
    explainer: SequenceExplainer,
    vcf: str | Path | Iterable[VariantRecord],
    fasta: str | Path | pyfaidx.Fasta,
    window: int | None = None,
    target: Any = None,
    batch_size: int = 64,
    motifs: Any = "JASPAR2024",
    delta_tracks: bool = False,
    sort: bool = True,
) -> pd.DataFrame:
    """One row per variant and ALT allele: both windows explained, the effect in score and relevance.

    ``vcf``: a VCF path (see :func:`read_vcf`) or records; ``fasta``: a FASTA path (indexed by
    ``pyfaidx``; its ``.fai`` is read if there, else one is built in our cache folder, never beside
    the genome: :func:`open_fasta`) or an open ``pyfaidx.Fasta``;
    ``window``: bases per window (default :func:`default_window`); ``target``: the output to
    explain (an index or a callable, as :meth:`SequenceExplainer.explain`); ``batch_size``: variants
    explained together (each brings two windows).

    Columns (:data:`COLUMNS`): ``chrom, pos`` (1-based), ``id, ref, alt, status``; ``ref_score`` and
    ``alt_score`` the explained value of each window; ``delta_score = alt_score - ref_score``;
    ``delta_relevance``: the alternative window's relevance (per position, all channels) summed over
    ALT's bases minus the reference window's summed over REF's bases (both from index
    ``window // 2``). Rows with status ``"ok"`` come first, by ``|delta_score|`` descending, then the
    others (NaN scores) in file order.

    ``motifs``: a motif library (a JASPAR release, a JASPAR/MEME file or Biopython motifs) adds
    the columns ``ref_motif, ref_motif_p, alt_motif, alt_motif_p, motif_change`` (the strongest
    seqlet at the variant in each window, named; :mod:`lrp_domains.bio.variants.motifs`); None
    leaves them out. ``delta_tracks=True`` adds ``window_start`` and ``delta_track`` (the aligned
    per-base delta, module docstring) for :func:`variants_to_bigwig`. ``sort=False`` keeps the
    rows in file order (dataset runs, :mod:`lrp_domains.bio.variants.explainer`).
    """
    import pandas as pd

    from lrp_domains.bio.variants.motifs import MOTIF_COLUMNS

    window = default_window(explainer) if window is None else int(window)
    if window < 1:
        raise InputError(f"window={window}: give a positive number of bases")
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: give a positive number")
    records = read_vcf(vcf) if isinstance(vcf, (str, Path)) else iter(vcf)
    genome, opened = open_fasta(fasta)
    rows: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], VariantRecord, VariantWindows]] = []
    ambiguous: list[tuple[VariantRecord, str]] = []
    unknown: dict[str, None] = {}
    try:
        for record in records:
            windows = variant_windows(record, genome, window)
            if windows.status == "ambiguous_base":
                ambiguous.append((record, windows.detail))
            elif windows.status == "unknown_chrom":
                unknown[record.chrom] = None
            row = {
                "chrom": record.chrom,
                "pos": record.pos,
                "id": record.id,
                "ref": record.ref,
                "alt": record.alt,
                "status": windows.status,
                "ref_score": math.nan,
                "alt_score": math.nan,
                "delta_score": math.nan,
                "delta_relevance": math.nan,
            }
            if motifs is not None:
                row.update(ref_motif="", ref_motif_p=math.nan, alt_motif="", alt_motif_p=math.nan, motif_change="")
            if delta_tracks:
                row.update(window_start=windows.start, delta_track=None)
            rows.append(row)
            if windows.status == "ok":
                pending.append((row, record, windows))
                if len(pending) >= batch_size:
                    _explain_pending(explainer, pending, target, batch_size, motifs, delta_tracks)
                    pending = []
        if pending:
            _explain_pending(explainer, pending, target, batch_size, motifs, delta_tracks)
        names = list(genome.keys()) if unknown else []
    finally:
        if opened:
            genome.close()
    _warn_skipped(ambiguous, list(unknown), names)
    columns = (
        list(COLUMNS)
        + (list(MOTIF_COLUMNS) if motifs is not None else [])
        + (list(TRACK_COLUMNS) if delta_tracks else [])
    )
    table = pd.DataFrame(rows, columns=columns)
    table["pos"] = table["pos"].astype("int64")
    return sort_by_effect(table) if sort else table


def sort_by_effect(table: pd.DataFrame) -> pd.DataFrame:
    """The explained variants first, largest ``|delta_score|`` first (ties and the others in their
    order)."""
    ok = table["status"] == "ok"
    order = sorted(
        range(len(table)), key=lambda i: (not ok.iloc[i], -abs(table["delta_score"].iloc[i]) if ok.iloc[i] else 0.0)
    )
    return table.iloc[order].reset_index(drop=True)


def _warn_skipped(ambiguous: list[tuple[VariantRecord, str]], unknown: list[str], genome: list[str]) -> None:
    """One :class:`VariantWarning` for variants whose window has an IUPAC letter, one for chromosomes
    the genome does not have."""
    import warnings

    if ambiguous:
        record, detail = ambiguous[0]
        more = f" (and {len(ambiguous) - 1} more variants)" if len(ambiguous) > 1 else ""
        warnings.warn(
            f"{detail} in the genome window of variant {record.chrom}:{record.pos} {record.ref}>{record.alt}"
            f"{more}: letters other than A, C, G, T, N cannot be one-hot encoded; these variants have status "
            "ambiguous_base, the others are explained (replace such letters in the genome with N to "
            "explain them)",
            VariantWarning,
            stacklevel=3,
        )
    hint = chrom_naming_hint(unknown, genome)
    if hint:
        warnings.warn(hint, VariantWarning, stacklevel=3)


def chrom_naming_hint(unknown: list[str], genome: list[str]) -> str | None:
    """What to say about VCF chromosomes ``unknown`` that the ``genome`` (its sequence names) does
    not have: a ``chr`` prefix on one side only, or names that simply differ; None when all are known."""
    if not unknown:
        return None
    names = set(genome)

    def counterpart(chrom: str) -> str | None:
        bare = chrom[3:] if chrom.lower().startswith("chr") else None
        options = [bare] if bare is not None else [f"chr{chrom}"]
        options += {"M": ["chrM", "MT"], "MT": ["chrM", "M"], "chrM": ["MT", "M"]}.get(chrom, [])
        return next((o for o in options if o in names), None)

    def few(items: list[str]) -> str:
        return ", ".join(items[:3]) + ("..." if len(items) > 3 else "")

    matched = [(chrom, found) for chrom in unknown if (found := counterpart(chrom)) is not None]
    if matched:
        return (
            f"the VCF names chromosomes {few([c for c, _ in matched])}; the genome {few([g for _, g in matched])}: "
            "rename one of them (add or strip the 'chr' prefix, e.g. bcftools annotate --rename-chrs); "
            "these variants have status unknown_chrom"
        )
    return (
        f"the genome has no chromosome {few(unknown)} (it has {few(list(genome)) or 'no sequences'}): these "
        "variants have status unknown_chrom; check that the VCF and the genome are the same assembly"
    )


def _explain_pending(
    explainer: SequenceExplainer,
    pending: list[tuple[dict[str, Any], VariantRecord, VariantWindows]],
    target: Any,
    batch_size: int,
    motifs: Any = None,
    delta_tracks: bool = False,
) -> None:
    from lrp_domains.bio.variants.motifs import allele_windows, variant_motifs

    sequences, ids = [], []
    for k, (_, record, windows) in enumerate(pending):
        key = f"{k}:{record.chrom}:{record.pos}:{record.line}:{record.allele}"
        sequences += [windows.ref, windows.alt]
        ids += [f"{key}:ref", f"{key}:alt"]
    result = explainer.explain(sequences, ids=ids, target=target, batch_size=2 * batch_size)
    per_position = result.per_position.double()
    explained = result.explained.double()
    for k, (row, record, windows) in enumerate(pending):
        c = windows.center
        ref_score, alt_score = float(explained[2 * k]), float(explained[2 * k + 1])
        ref_relevance = float(per_position[2 * k, c : c + len(record.ref)].sum())
        alt_relevance = float(per_position[2 * k + 1, c : c + len(record.alt)].sum())
        row.update(
            ref_score=ref_score,
            alt_score=alt_score,
            delta_score=alt_score - ref_score,
            delta_relevance=alt_relevance - ref_relevance,
        )
        if delta_tracks:
            row["delta_track"] = aligned_delta(
                per_position[2 * k].numpy(), per_position[2 * k + 1].numpy(), c, record.ref, record.alt
            ).astype("float32")
    if motifs is not None:
        pairs = [
            allele_windows(
                per_position[2 * k].numpy(),
                per_position[2 * k + 1].numpy(),
                windows.ref,
                windows.alt,
                windows.center,
                record.ref,
                record.alt,
            )
            for k, (_, record, windows) in enumerate(pending)
        ]
        for (row, _, _), found in zip(pending, variant_motifs(pairs, motifs)):
            row.update(found)


def aligned_delta(ref_relevance: Any, alt_relevance: Any, center: int, ref: str, alt: str) -> Any:
    """Per base of the reference window: the alternative window's relevance minus the reference
    window's, aligned across the allele (module docstring). ``ref_relevance``/``alt_relevance``:
    relevance per position of the two windows (equal lengths); ``center``: the variant's first
    base; ``ref``/``alt``: the alleles. Summed over REF's bases it is the variant's
    ``delta_relevance``."""
    import numpy as np

    ref_relevance = np.asarray(ref_relevance, dtype=np.float64)
    alt_relevance = np.asarray(alt_relevance, dtype=np.float64)
    if ref_relevance.shape != alt_relevance.shape or ref_relevance.ndim != 1:
        raise InputError(
            f"aligned_delta: two equal-length 1-D arrays needed, got {ref_relevance.shape} and {alt_relevance.shape}"
        )
    n, lr, la = len(ref_relevance), len(ref), len(alt)
    if not 0 <= center <= n - max(lr, la):
        raise InputError(f"aligned_delta: an allele of {max(lr, la)} bases at {center} does not fit {n} bases")
    delta = -ref_relevance
    delta[:center] += alt_relevance[:center]
    delta[center : center + lr] += alt_relevance[center : center + la].sum() / lr
    right = np.arange(center + lr, n)
    shifted = right - lr + la
    inside = shifted < n
    delta[right[inside]] += alt_relevance[shifted[inside]]
    return delta


def variants_to_bigwig(table: pd.DataFrame, path: str | Path, chrom_sizes: Any) -> Path:
    """Write the ``delta_track`` of every explained variant of ``table`` (from
    :func:`explain_variants` with ``delta_tracks=True``) as a bigWig in genome coordinates
    (:func:`lrp_domains.bio.sequences.tracks.to_bigwig`; where windows of nearby variants overlap, their
    values are averaged). ``chrom_sizes``: a dict, a ``chrom.sizes`` file or the genome's ``.fai``."""
    from lrp_domains.bio.sequences.tracks import to_bigwig

    missing = [c for c in TRACK_COLUMNS if c not in table]
    if missing:
        raise InputError(
            f"the variant table has no {', '.join(missing)} column; explain the variants with delta_tracks=True"
        )
    done = table[table["status"] == "ok"]
    if not len(done):
        raise InputError("no explained variant (status 'ok') to write as a track")
    records = (
        (chrom, int(start), values)
        for chrom, start, values in zip(done["chrom"], done["window_start"], done["delta_track"])
    )
    return to_bigwig(records, path, chrom_sizes)
