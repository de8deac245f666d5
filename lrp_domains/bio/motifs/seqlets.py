"""Seqlets (contiguous high-relevance windows), JASPAR motif matches, and exports for the
tools genomics users already run (tfmodisco-lite, BED, logos).

Seqlet threshold: a position window's relevance (summed over ``window`` bases) is called when it
exceeds a quantile of a *null*: by default, of the same window sums over all sequences with
their positions shuffled (``null="shuffle"``: the relevance values of each sequence permuted,
which keeps their distribution but destroys their spatial clustering); or the window sums of an
explanation of shuffled sequences (``null=<SequenceExplanation>``); or a plain quantile of the
observed window sums (``null="quantile"``). ``alpha`` is the null's tail probability (0.01).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lrp_domains.errors import InputError

if TYPE_CHECKING:
    from lrp_domains.bio.sequences.explainer import SequenceExplanation


def _window_sums(values: np.ndarray, window: int) -> np.ndarray:
    kernel = np.ones(window)
    return np.stack([np.convolve(row, kernel, mode="same") for row in values])


def call_seqlets(
    explanation: SequenceExplanation | Sequence[SequenceExplanation],
    window: int = 7,
    alpha: float = 0.01,
    null: Any = "shuffle",
    flank: int = 3,
    sign: str = "positive",
    min_length: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Contiguous windows whose relevance stands out against a null (module docstring).

    ``explanation``: one explanation, or several (the groups of
    :meth:`~lrp_domains.bio.SequenceExplainer.explain_groups`), pooled into one null.

    Returns a DataFrame with columns id, start, end (0-based, end exclusive), strand (``+``: the
    record's own strand; motif matches report theirs), relevance (summed over the seqlet),
    sequence, and the threshold used. Records whose relevance is NaN or Inf are left out, of the
    null and of the calls.
    """
    if sign not in ("positive", "negative", "both"):
        raise ValueError(f"sign must be 'positive', 'negative' or 'both', got {sign!r}")
    groups = list(explanation) if isinstance(explanation, (list, tuple)) else [explanation]
    ids = [name for group in groups for name in group.ids]
    sequences = [sequence for group in groups for sequence in group.sequences]
    lengths = [length for group in groups for length in group.lengths]
    # Per record, no padding: records of any lengths pool into one null.
    scores = [
        row[:length]
        for group in groups
        for row, length in zip(group.per_position.double().cpu().numpy(), group.lengths)
    ]
    # Records with NaN/Inf relevance (a model that gave NaN) are left out: of the null and of the calls.
    finite = [bool(np.isfinite(row).all()) for row in scores]
    sums = [_window_sums(row[None], window)[0] for row in scores]
    if isinstance(null, str) and null == "shuffle":
        rng = np.random.default_rng(seed)
        reference = [_window_sums(rng.permutation(row)[None], window)[0] for row, ok in zip(scores, finite) if ok]
    elif isinstance(null, str) and null == "quantile":
        reference = [row for row, ok in zip(sums, finite) if ok]
    elif hasattr(null, "per_position"):
        null_scores = null.per_position.double().cpu().numpy()
        reference = [
            _window_sums(row[:length][None], window)[0]
            for row, length in zip(null_scores, null.lengths)
            if np.isfinite(row[:length]).all()
        ]
    else:
        raise ValueError("null must be 'shuffle', 'quantile' or a SequenceExplanation of shuffled sequences")
    columns = ["id", "start", "end", "strand", "relevance", "sequence", "sign", "threshold"]
    if not reference or not any(finite):
        return pd.DataFrame([], columns=columns)
    valid = np.concatenate(reference)
    rows = []
    for direction in ["positive", "negative"] if sign == "both" else [sign]:
        factor = 1.0 if direction == "positive" else -1.0
        threshold = float(np.quantile(factor * valid, 1 - alpha))
        threshold = max(threshold, 0.0)
        for i, name in enumerate(ids):
            if not finite[i]:
                continue
            length = lengths[i]
            above = factor * sums[i] > threshold
            for start, end in _runs(above):
                start, end = max(0, start - flank), min(length, end + flank)
                if end - start < min_length:
                    continue
                rows.append(
                    {
                        "id": name,
                        "start": start,
                        "end": end,
                        "strand": "+",
                        "relevance": float(scores[i][start:end].sum()),
                        "sequence": sequences[i][start:end],
                        "sign": direction,
                        "threshold": factor * threshold,
                    }
                )
    return pd.DataFrame(rows, columns=columns)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of True."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


@functools.lru_cache(maxsize=8)
def _jaspar(release: str, collection: str, tax_group: str) -> tuple:
    from pyjaspar import jaspardb

    releases = jaspardb().get_releases()
    if release not in releases:
        raise InputError(f"--motifs {release}: no such JASPAR release; pyjaspar has {', '.join(releases)}")
    return tuple(jaspardb(release=release).fetch_motifs(collection=collection, tax_group=[tax_group]))


def load_motifs(motifs: Any, collection: str = "CORE", tax_group: str = "vertebrates") -> list:
    """Motifs from a JASPAR release name (pyjaspar, offline), a JASPAR/MEME file, or a list of
    Biopython motifs; an InputError for an unknown release, a missing, unreadable or empty file."""
    from Bio import motifs as bio_motifs

    if isinstance(motifs, str) and motifs.upper().startswith("JASPAR") and not Path(motifs).exists():
        return list(_jaspar(motifs.upper(), collection, tax_group))
    if isinstance(motifs, (str, Path)):
        path = Path(motifs)
        if not path.is_file():
            raise InputError(
                f"--motifs {motifs}: no such motif file (give a JASPAR release such as JASPAR2024, a "
                "JASPAR or MEME file, or none)"
            )
        try:
            text = path.read_text(encoding="utf-8")
            fmt = "meme" if "MEME version" in text else "jaspar"
            with path.open(encoding="utf-8") as handle:
                found = list(bio_motifs.parse(handle, fmt))
        except Exception as error:  # Biopython raises many types for text that is not a motif file
            raise InputError(
                f"--motifs {path.name}: not a JASPAR or MEME motif file ({type(error).__name__}: {error})"
            ) from None
        if not found:
            raise InputError(f"--motifs {path.name}: no motifs in the file (expected JASPAR or MEME format)")
        return found
    return list(motifs)


@functools.lru_cache(maxsize=4096)
def _pssm(matrix_id: str, counts_key: tuple) -> Any:
    """A motif's PSSM over its own letters: log-odds against a uniform background, pseudocount
    0.5 (Biopython)."""
    from Bio.motifs.matrix import FrequencyPositionMatrix

    counts = {letter: list(values) for letter, values in counts_key}
    return FrequencyPositionMatrix("".join(counts), counts).normalize(pseudocounts=0.5).log_odds()


@functools.lru_cache(maxsize=4096)
def _distribution(matrix_id: str, counts_key: tuple) -> Any:
    """The PSSM's exact score distribution under a uniform background (Biopython's
    ``ScoreDistribution(precision=1000)``, the same numbers, computed with NumPy; cached)."""
    from lrp_domains.bio.motifs.scores import score_distribution

    letters = [letter for letter, _ in counts_key]
    background = {letter: 1.0 / len(letters) for letter in letters}
    return score_distribution(_pssm(matrix_id, counts_key), background=background, precision=10**3)


def _scannable(sequence: str, letters: str) -> str:
    """``sequence`` in a motif's letters: RNA ``U`` read as ``T`` for DNA motifs, other letters as N."""
    text = str(sequence).upper()
    if "U" in text and "U" not in letters and "T" in letters:
        text = text.replace("U", "T")
    return "".join(c if c in letters else "N" for c in text)


def _p_value(distribution: Any, score: float) -> float:
    """P(score >= ``score``) for a random uniform sequence, from the PSSM's score distribution."""
    from lrp_domains.bio.motifs.scores import p_value

    return p_value(distribution, score)


def _best_site(pssm: Any, sequence: Any) -> tuple[float, str, int]:
    """Highest score over positions and both strands: (score, strand, position) (Biopython's
    scanner; :func:`_scan` does the same for all A/C/G/T motifs at once)."""
    forward = np.atleast_1d(np.nan_to_num(np.asarray(pssm.calculate(sequence), dtype=float), nan=-np.inf))
    reverse = np.atleast_1d(
        np.nan_to_num(np.asarray(pssm.reverse_complement().calculate(sequence), dtype=float), nan=-np.inf)
    )
    strand, scores = ("+", forward) if forward.max() >= reverse.max() else ("-", reverse)
    position = int(scores.argmax())
    return float(scores[position]), strand, position


def _is_dna(letters: str) -> bool:
    return sorted(letters) == ["A", "C", "G", "T"]


@functools.lru_cache(maxsize=8)
def _library_tables(library: tuple) -> tuple[Any, np.ndarray, np.ndarray]:
    """For a prepared library ``((matrix_id, key, letters), ...)``: the scan tables of its A/C/G/T
    motifs (None without any), and every motif's PSSM minimum and maximum (cached across calls)."""
    from lrp_domains.bio.motifs.scores import ScanTables, pssm_bounds, scan_matrix

    pssms = [_pssm(matrix_id, key) for matrix_id, key, _ in library]
    matrices = [scan_matrix(p) for p, (_, _, letters) in zip(pssms, library) if _is_dna(letters)]
    tables = ScanTables([(forward, forward[::-1, ::-1]) for forward in matrices]) if matrices else None
    bounds = np.array([pssm_bounds(p) for p in pssms]).reshape(-1, 2)
    return tables, bounds[:, 0], bounds[:, 1]


def _scan(sequences: list[str], prepared: list, tables: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_best_site`` of every motif of ``prepared`` in every sequence: scores (-inf: no finite
    window, or the motif is longer than the sequence), minus-strand flags and positions ``(S, M)``.
    Motifs over A/C/G/T are scanned together with ``tables`` (:mod:`lrp_domains.bio.motifs.scores`,
    equal to Biopython's scanner); others go through Biopython one by one."""
    from Bio.Seq import Seq

    from lrp_domains.bio.motifs.scores import encode

    score = np.full((len(sequences), len(prepared)), -np.inf)
    minus = np.zeros(score.shape, dtype=bool)
    position = np.zeros(score.shape, dtype=np.int64)
    dna = np.array([_is_dna(entry[4]) for entry in prepared], dtype=bool)
    if dna.any() and sequences:
        codes, lengths = encode([_scannable(sequence, "ACGT") for sequence in sequences])
        score[:, dna], minus[:, dna], position[:, dna] = tables.scan(codes, lengths)
        # As before, a motif longer than the sequence as given is not scanned (upper-casing may
        # change a non-ASCII text's length).
        widths = np.array([entry[2] for entry in prepared])
        too_long = dna[None, :] & (widths[None, :] > np.array([len(s) for s in sequences])[:, None])
        score[too_long] = -np.inf
    others = np.flatnonzero(~dna).tolist()
    for row, sequence in enumerate(sequences):
        cleaned: dict[str, Any] = {}
        for i in others:
            matrix_id, _, width, key, letters = prepared[i]
            if width > len(sequence):
                continue
            if letters not in cleaned:
                cleaned[letters] = Seq(_scannable(sequence, letters))
            best, strand, where = _best_site(_pssm(matrix_id, key), cleaned[letters])
            score[row, i], minus[row, i], position[row, i] = best, strand == "-", where
    return score, minus, position


def annotate_seqlets(
    seqlets: pd.DataFrame,
    motifs: Any = "JASPAR2024",
    collection: str = "CORE",
    tax_group: str = "vertebrates",
    max_p: float = 1e-3,
    candidates: int = 5,
) -> pd.DataFrame:
    """The best-matching motif per seqlet, with its PSSM log-odds score, strand, position and
    p-value under a uniform background (from the PSSM's exact score distribution; Biopython).

    Every motif is scanned over the seqlet and both strands; the ``candidates`` with the highest
    relative score (score between the PSSM's minimum and maximum, comparable across widths) get
    exact p-values, and the smallest p-value wins. ``motifs``: a JASPAR release (pyjaspar,
    offline), a JASPAR/MEME file, or a list of Biopython motifs. Matches with ``p > max_p`` are
    reported as no match (``motif_id`` empty); ``motifs_scanned`` says how many motifs were tried.

    All seqlets and motifs are scanned at once with NumPy, and the score distributions are NumPy
    too, cached per motif across seqlets and calls (:mod:`lrp_domains.bio.motifs.scores`); both
    give Biopython's numbers exactly (``tests/test_motif_speed.py``).
    """
    library = load_motifs(motifs, collection, tax_group)
    prepared = []
    for motif in library:
        letters = "".join(str(motif.alphabet))
        key = tuple((letter, tuple(float(v) for v in motif.counts[letter])) for letter in letters)
        prepared.append((getattr(motif, "matrix_id", None) or motif.name, motif.name, len(motif), key, letters))
    sequences = [str(sequence) for sequence in seqlets["sequence"]]
    tables, lows, highs = _library_tables(tuple((entry[0], entry[3], entry[4]) for entry in prepared))
    score, minus, position = _scan(sequences, prepared, tables)
    # A motif whose every column is flat (maximum = minimum) scores every sequence alike (p = 1):
    # never a candidate (its relative score and its distribution's step would divide by zero).
    spread = highs - lows
    finite = np.isfinite(score) & (spread > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(finite, (score - lows) / np.where(spread > 0, spread, 1.0), -np.inf)
    # The candidates per seqlet: every motif at or above the candidates-th highest relative score
    # (ties included), then ranked exactly as before (relative, score, strand, position, id, ...).
    if 0 < candidates < len(prepared):
        cutoff = np.partition(relative, len(prepared) - candidates, axis=1)[:, len(prepared) - candidates]
    else:
        cutoff = np.full(len(sequences), -np.inf)
    rows = []
    for row in range(len(sequences)):
        chosen = np.flatnonzero(finite[row] & (relative[row] >= cutoff[row]))
        scored = [
            (
                float(relative[row, i]),
                float(score[row, i]),
                "-" if minus[row, i] else "+",
                int(position[row, i]),
                prepared[i][0],
                prepared[i][1],
                prepared[i][3],
            )
            for i in chosen
        ]
        best = None
        for _, value, strand, where, matrix_id, name, key in sorted(scored, reverse=True)[:candidates]:
            p_value = _p_value(_distribution(matrix_id, key), value)
            if best is None or p_value < best[0]:
                best = (p_value, value, strand, where, matrix_id, name)
        if best is None:
            rows.append(
                {
                    "motif_id": "",
                    "motif_name": "",
                    "match_score": np.nan,
                    "match_p": np.nan,
                    "match_strand": "",
                    "match_start": np.nan,
                }
            )
            continue
        p_value, value, strand, where, matrix_id, name = best
        matched = p_value <= max_p
        rows.append(
            {
                "motif_id": matrix_id if matched else "",
                "motif_name": name if matched else "",
                "match_score": value,
                "match_p": p_value,
                "match_strand": strand,
                "match_start": where,
            }
        )
    columns = ["motif_id", "motif_name", "match_score", "match_p", "match_strand", "match_start"]
    result = pd.concat([seqlets.copy(), pd.DataFrame(rows, index=seqlets.index, columns=columns)], axis=1)
    result["motifs_scanned"] = len(prepared)
    return result


def motif_ppm(motif: Any, alphabet: str = "ACGT") -> np.ndarray | None:
    """A Biopython/JASPAR motif's counts as a PPM ``(len(alphabet), width)`` in ``alphabet``'s
    order (None when the motif lacks one of the letters)."""
    letters = "".join(str(motif.alphabet))
    if any(letter not in letters for letter in alphabet):
        return None
    counts = np.array([[float(v) for v in motif.counts[letter]] for letter in alphabet])
    totals = counts.sum(0, keepdims=True)
    return counts / np.where(totals > 0, totals, 1.0)


def match_matrix(
    ppm: np.ndarray,
    alphabet: str = "ACGT",
    motifs: Any = "JASPAR2024",
    collection: str = "CORE",
    tax_group: str = "vertebrates",
    max_e: float = 0.05,
    min_overlap: int = 5,
) -> dict[str, Any]:
    """The motif most similar to a position probability matrix ``ppm`` ``(A, W)`` (a filter's
    aligned seqlets, a CWM's PPM, a filter's weights as probabilities), by the TOMTOM statistics
    (:func:`lrp_domains.bio.motifs.tomtom.compare_motif`: Pearson column scores, offset-corrected
    p-values against the library's columns). Returns ``{"motif_id", "motif_name", "match_p",
    "match_e", "match_strand", "match_offset"}``; id and name are empty when the E-value (p times
    the number of motifs) is above ``max_e``."""
    from lrp_domains.bio.motifs.tomtom import compare_motif

    ppm = np.asarray(ppm, dtype=float)
    if ppm.ndim != 2 or ppm.shape[0] != len(alphabet):
        raise InputError(f"ppm must be ({len(alphabet)}, width) for alphabet {alphabet}, got shape {ppm.shape}")
    library = [
        (motif, matrix)
        for motif in load_motifs(motifs, collection, tax_group)
        if (matrix := motif_ppm(motif, alphabet)) is not None
    ]
    if not library:
        raise InputError(f"no motif in the library uses the letters {alphabet}")
    result = compare_motif(ppm, [matrix for _, matrix in library], alphabet, min_overlap=min_overlap)
    best = result.best()
    motif = library[best][0]
    matched = result.e_value[best] <= max_e
    return {
        "motif_id": (getattr(motif, "matrix_id", None) or motif.name) if matched else "",
        "motif_name": motif.name if matched else "",
        "match_p": float(result.p_value[best]),
        "match_e": float(result.e_value[best]),
        "match_strand": str(result.strand[best]),
        "match_offset": int(result.offset[best]),
    }


def to_modisco(explanation: SequenceExplanation, prefix: str | Path) -> tuple[Path, Path]:
    """Write ``<prefix>ohe.npz`` (one-hot, N x A x L) and ``<prefix>attr.npz`` (hypothetical
    contributions, N x A x L), as ``modisco motifs -s ohe.npz -a attr.npz`` reads them. The
    sequences must have one length (tfmodisco-lite's windows); nothing is padded."""
    from lrp_domains.files.writing import atomic_path

    if len(set(explanation.lengths)) != 1:
        shown = sorted(set(explanation.lengths))[:5]
        raise InputError(f"tfmodisco-lite needs sequences of one length; these have {shown}")
    prefix = str(prefix)
    sequences, attributions = Path(prefix + "ohe.npz"), Path(prefix + "attr.npz")
    sequences.parent.mkdir(parents=True, exist_ok=True)
    for path, values in ((sequences, explanation.onehot), (attributions, explanation.hypothetical)):
        with atomic_path(path) as temporary, temporary.open("wb") as handle:
            np.savez_compressed(handle, values.float().cpu().numpy())
    return sequences, attributions


def to_bed(seqlets: pd.DataFrame, path: str | Path) -> Path:
    """Seqlets as BED6: chrom = record id, start, end, name (motif match or ``seqlet``), score
    (summed relevance), strand (the motif match's, else ``.``)."""
    names = seqlets.get("motif_name", pd.Series([""] * len(seqlets), index=seqlets.index)).fillna("")
    strands = seqlets.get("match_strand", pd.Series([""] * len(seqlets), index=seqlets.index)).fillna("")
    frame = pd.DataFrame(
        {
            "chrom": seqlets["id"],
            "start": seqlets["start"],
            "end": seqlets["end"],
            "name": [n if n else "seqlet" for n in names],
            "score": seqlets["relevance"].astype(float).round(6),
            "strand": [s if (s and n) else "." for s, n in zip(strands, names)],
        }
    )
    path = Path(path)
    frame.to_csv(path, sep="\t", header=False, index=False)
    return path


def plot_logo(
    explanation: SequenceExplanation,
    index: int,
    start: int | None = None,
    end: int | None = None,
    ax: Any = None,
    hypothetical: bool = False,
) -> Any:
    """A sequence logo of one sequence between ``start`` and ``end`` (logomaker): the observed
    letters' relevance, one letter per position (``hypothetical=True``: every letter's hypothetical
    contribution, stacked). Returns the axes."""
    import logomaker
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = (explanation.hypothetical if hypothetical else explanation.relevance)[index]
    length = explanation.lengths[index]
    start, end = start or 0, min(end or length, length)
    frame = pd.DataFrame(
        values[:, start:end].T.double().cpu().numpy(), columns=list(explanation.alphabet), index=np.arange(start, end)
    )
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4, (end - start) / 8), 1.8))
    logomaker.Logo(frame, ax=ax, color_scheme="classic")
    ax.set_title(f"{explanation.ids[index]} [{start}, {end})", fontsize=9, parse_math=False)
    ax.set_xlabel("position")
    ax.set_ylabel("relevance")
    return ax


def shuffle_sequences(sequences: Sequence[str], seed: int = 0) -> list[str]:
    """Each sequence with its bases permuted (a null for :func:`call_seqlets`)."""
    rng = np.random.default_rng(seed)
    return ["".join(rng.permutation(list(s))) for s in sequences]


# -- tangermeme's tables and logos -----------------------------------------------------------------
TANGERMEME_COLUMNS = ["example_idx", "start", "end", "attribution"]


def _example_index(seqlets: pd.DataFrame, ids: Any) -> np.ndarray:
    if ids is None:
        values = pd.to_numeric(seqlets["id"], errors="coerce")
        if values.isna().any() or (values % 1 != 0).any():
            raise InputError(
                "seqlets name their records by id; give ids= (the explanation, or its ids in order) "
                "to number them as tangermeme's example_idx"
            )
        return values.astype(int).to_numpy()
    order = {str(name): i for i, name in enumerate(getattr(ids, "ids", ids))}
    missing = sorted({str(name) for name in seqlets["id"]} - set(order))
    if missing:
        raise InputError(f"seqlets of records {missing[:5]} are not among the ids given")
    return np.array([order[str(name)] for name in seqlets["id"]], dtype=int)


def to_tangermeme(seqlets: pd.DataFrame, ids: Any = None) -> pd.DataFrame:
    """Seqlets (:func:`call_seqlets`) as tangermeme's seqlet table: ``example_idx``, ``start``,
    ``end`` (0-based, end excluded), ``attribution`` (summed relevance), as
    ``tangermeme.seqlet.recursive_seqlets`` and ``tfmodisco_seqlets`` return them and
    ``tangermeme.annotate.annotate_seqlets`` reads them. ``ids``: the explanation the seqlets were
    called on (or its ids in order), which numbers the records; None: ids that are numbers already.
    Sorted by attribution, largest first."""
    frame = pd.DataFrame(
        {
            "example_idx": _example_index(seqlets, ids) if len(seqlets) else np.array([], dtype=int),
            "start": seqlets["start"].astype(int).to_numpy(),
            "end": seqlets["end"].astype(int).to_numpy(),
            "attribution": seqlets["relevance"].astype(float).to_numpy(),
        },
        columns=TANGERMEME_COLUMNS,
    )
    return frame.sort_values("attribution", ascending=False, kind="stable").reset_index(drop=True)


def logo_annotations(seqlets: pd.DataFrame, record: Any) -> pd.DataFrame:
    """One record's seqlets as ``tangermeme.plot.plot_logo(annotations=...)`` reads them:
    ``motif_name`` (first: the motif match where :func:`annotate_seqlets` found one, else
    ``seqlet``), ``start``, ``end``, ``strand``, ``score`` (summed relevance). ``record``: its id."""
    rows = seqlets[seqlets["id"].astype(str) == str(record)]
    names = rows.get("motif_name", pd.Series([""] * len(rows), index=rows.index)).fillna("")
    strands = rows.get("match_strand", rows["strand"]).fillna("")
    return pd.DataFrame(
        {
            "motif_name": [name if name else "seqlet" for name in names],
            "start": rows["start"].astype(int).to_numpy(),
            "end": rows["end"].astype(int).to_numpy(),
            "strand": [strand if (strand and name) else "+" for strand, name in zip(strands, names)],
            "score": rows["relevance"].astype(float).to_numpy(),
        }
    )


def logo_matrix(explanation: SequenceExplanation, index: int, hypothetical: bool = False) -> np.ndarray:
    """One record's relevance as the ``(A, L)`` array ``tangermeme.plot.plot_logo`` draws: each
    position's relevance on its observed letter (``hypothetical=True``: every letter's hypothetical
    contribution), without padding."""
    values = explanation.hypothetical if hypothetical else explanation.relevance
    return values[index, :, : explanation.lengths[index]].double().cpu().numpy()
