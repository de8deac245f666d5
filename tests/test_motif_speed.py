"""Motif annotation at NumPy speed, equal to the former Biopython path (issue #17).

``annotate_seqlets`` now scans all motifs over all seqlets at once and builds the exact score
distributions with NumPy (``lrp_domains.bio.motifs.scores``). These tests hold it to Biopython:
every score distribution equal element for element to ``Bio.motifs.thresholds.ScoreDistribution``
(a spread of JASPAR2024 vertebrate motifs over all widths and the ten planted motifs of
``lrp_domains.bench.data.synthetic``), the scanner equal to ``pssm.calculate``, and the whole annotation
equal to the implementation it replaced (kept below, verbatim, as the reference) on seqlets of
real explanations.
"""

import functools

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("Bio")
pytest.importorskip("pyjaspar")

from lrp_domains.bench.data.synthetic import MOTIF_IDS, make_dataset  # noqa: E402
from lrp_domains.bio import SequenceExplainer, annotate_seqlets, call_seqlets  # noqa: E402
from lrp_domains.bio.motifs.scores import (  # noqa: E402
    ScanTables,
    encode,
    p_value,
    pssm_bounds,
    scan_matrix,
    score_distribution,
)
from lrp_domains.bio.motifs.seqlets import _distribution, _pssm, _scannable, load_motifs  # noqa: E402

# --- the reference: annotate_seqlets as it was before the NumPy path (Biopython throughout) -----------------


_REFERENCE_KEYS = []  # (matrix_id, key) of every distribution the reference built


@functools.lru_cache(maxsize=4096)
def _reference_distribution(matrix_id, counts_key):
    _REFERENCE_KEYS.append((matrix_id, counts_key))
    letters = [letter for letter, _ in counts_key]
    background = {letter: 1.0 / len(letters) for letter in letters}
    return _pssm(matrix_id, counts_key).distribution(background=background, precision=10**3)


def _reference_p_value(distribution, score):
    # Biopython's reading, from the score's own bin, less the rounding slack of the columns
    # (lrp_domains.bio.motifs.scores.p_value: without it a consensus site's p-value is 0)
    columns = distribution.n_points // 10**3
    index = int((score - distribution.min_score) / distribution.step) - (columns + 2) // 2
    return float(np.clip(np.sum(distribution.bg_density[max(index, 0) :]), 0.0, 1.0))


def _reference_best_site(pssm, sequence):
    forward = np.atleast_1d(np.nan_to_num(np.asarray(pssm.calculate(sequence), dtype=float), nan=-np.inf))
    reverse = np.atleast_1d(
        np.nan_to_num(np.asarray(pssm.reverse_complement().calculate(sequence), dtype=float), nan=-np.inf)
    )
    strand, scores = ("+", forward) if forward.max() >= reverse.max() else ("-", reverse)
    position = int(scores.argmax())
    return float(scores[position]), strand, position


def reference_annotate_seqlets(
    seqlets, motifs="JASPAR2024", collection="CORE", tax_group="vertebrates", max_p=1e-3, candidates=5
):
    from Bio.Seq import Seq

    library = load_motifs(motifs, collection, tax_group)
    prepared = []
    for motif in library:
        letters = "".join(str(motif.alphabet))
        key = tuple((letter, tuple(float(v) for v in motif.counts[letter])) for letter in letters)
        prepared.append((getattr(motif, "matrix_id", None) or motif.name, motif.name, len(motif), key, letters))
    rows = []
    for sequence in seqlets["sequence"]:
        cleaned = {}
        scored = []
        for matrix_id, name, width, key, letters in prepared:
            if width > len(str(sequence)):
                continue
            if letters not in cleaned:
                cleaned[letters] = Seq(_scannable(sequence, letters))
            clean = cleaned[letters]
            pssm = _pssm(matrix_id, key)
            score, strand, position = _reference_best_site(pssm, clean)
            if np.isfinite(score):
                relative = (score - pssm.min) / (pssm.max - pssm.min)
                scored.append((relative, score, strand, position, matrix_id, name, key))
        best = None
        for _, score, strand, position, matrix_id, name, key in sorted(scored, reverse=True)[:candidates]:
            p_value = _reference_p_value(_reference_distribution(matrix_id, key), score)
            if best is None or p_value < best[0]:
                best = (p_value, score, strand, position, matrix_id, name)
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
        p_value, score, strand, position, matrix_id, name = best
        matched = p_value <= max_p
        rows.append(
            {
                "motif_id": matrix_id if matched else "",
                "motif_name": name if matched else "",
                "match_score": score,
                "match_p": p_value,
                "match_strand": strand,
                "match_start": position,
            }
        )
    result = pd.concat([seqlets.copy(), pd.DataFrame(rows, index=seqlets.index)], axis=1)
    result["motifs_scanned"] = len(prepared)
    return result


# --- fixtures -------------------------------------------------------------------------------------------------


def _key(motif):
    letters = "".join(str(motif.alphabet))
    return tuple((letter, tuple(float(v) for v in motif.counts[letter])) for letter in letters)


@pytest.fixture(scope="module")
def jaspar():
    return load_motifs("JASPAR2024")


@pytest.fixture(scope="module")
def seqlets():
    """Seqlets of the default CNN's explanations of synthetic sequences (both signs), a few with
    an N, a lower-case or an RNA letter, one shorter than every motif."""
    data = make_dataset(400, seed=11)
    explanation = SequenceExplainer.default().explain(list(data.sequences), ids=list(data.ids))
    found = call_seqlets(explanation, sign="both").reset_index(drop=True)
    found = found.iloc[:300].copy()
    edited = list(found.sequence)
    edited[0] = edited[0][:3] + "N" + edited[0][4:]
    edited[1] = edited[1].lower()
    edited[2] = edited[2].replace("T", "U")
    edited[3] = "N" * len(edited[3])
    edited[4] = edited[4][:4]
    edited[5] = edited[5][:2] + "R" + edited[5][3:-2] + "nn"
    found["sequence"] = edited
    return found


# --- tests ----------------------------------------------------------------------------------------------------


def _sample(library):
    """One motif of every width (the first in the library) and the planted ones."""
    chosen = {}
    for motif in library:
        if len(motif) not in {len(m) for m in chosen.values()}:
            chosen[motif.matrix_id] = motif
    chosen.update({m.matrix_id: m for m in library if m.matrix_id in MOTIF_IDS})
    return list(chosen.values())


def _assert_same_distribution(matrix_id, key):
    """Our distribution of a motif equals Biopython's, every bin, and so do p-values read from it."""
    ours, theirs = _distribution(matrix_id, key), _reference_distribution(matrix_id, key)
    assert (ours.min_score, ours.step, ours.n_points) == (theirs.min_score, theirs.step, theirs.n_points)
    assert np.array_equal(ours.bg_density, np.asarray(theirs.bg_density)), matrix_id
    grid = ours.min_score + ours.step * np.linspace(-3, ours.n_points + 3, 97)
    for score in list(grid) + [_pssm(matrix_id, key).max, _pssm(matrix_id, key).min, 0.0]:
        assert p_value(ours, float(score)) == _reference_p_value(theirs, float(score))


def test_score_distributions_equal_biopython(jaspar):
    """Every width in JASPAR2024 vertebrates (5 to 35) and the planted motifs; the annotation test
    below checks every other distribution its seqlets need (a few hundred motifs)."""
    sample = _sample(jaspar)
    assert {m.matrix_id for m in sample} >= set(MOTIF_IDS)
    assert {len(m) for m in sample} == {len(m) for m in jaspar}
    for motif in sample:
        _assert_same_distribution(motif.matrix_id, _key(motif))


def test_distribution_is_cached_across_calls(jaspar):
    motif = jaspar[0]
    assert _distribution(motif.matrix_id, _key(motif)) is _distribution(motif.matrix_id, _key(motif))


def test_score_distribution_clips_like_biopython():
    """A one-column motif (every bin shift at the ends of the range) and a non-uniform background."""
    from Bio.motifs.matrix import FrequencyPositionMatrix

    for counts in (
        {"A": [9], "C": [0], "G": [1], "T": [0]},
        {"A": [3, 0, 5], "C": [0, 8, 1], "G": [1, 0, 1], "T": [0, 1, 1]},
    ):
        pssm = FrequencyPositionMatrix("ACGT", counts).normalize(pseudocounts=0.5).log_odds()
        for background in (None, {"A": 0.3, "C": 0.2, "G": 0.2, "T": 0.3}):
            for precision in (10, 10**3):
                ours = score_distribution(pssm, background, precision)
                theirs = pssm.distribution(background, precision)
                assert np.array_equal(ours.bg_density, np.asarray(theirs.bg_density))


def test_scan_matrices_and_bounds_are_biopythons(jaspar):
    for motif in jaspar[::7]:
        pssm = _pssm(motif.matrix_id, _key(motif))
        reverse = pssm.reverse_complement()
        forward = scan_matrix(pssm)
        for matrix, source in ((forward, pssm), (forward[::-1, ::-1], reverse)):
            expected = np.array([[source[letter][i] for letter in "ACGT"] for i in range(source.length)], float)
            assert np.array_equal(matrix, expected)
        assert pssm_bounds(pssm) == (pssm.min, pssm.max)


def test_scanner_equals_biopython_calculate(jaspar):
    """Random sequences with N (1 to 60 bases, and one of 5,000), in chunks, and with work arrays
    so small that sequences go one at a time and windows in stretches."""
    rng = np.random.default_rng(0)
    sequences = [
        "".join(rng.choice(list("ACGTN"), size=n, p=[0.24, 0.24, 0.24, 0.24, 0.04]))
        for n in list(rng.integers(1, 60, size=40)) + [5000]
    ]
    motifs = _sample(jaspar)
    pssms = [_pssm(m.matrix_id, _key(m)) for m in motifs]
    tables = ScanTables([(scan_matrix(p), scan_matrix(p)[::-1, ::-1]) for p in pssms])
    codes, lengths = encode(sequences)
    shape = (len(sequences), len(pssms))
    expected = np.full(shape, -np.inf), np.zeros(shape, bool), np.zeros(shape, np.int64)
    for row, sequence in enumerate(sequences):
        for column, pssm in enumerate(pssms):
            if pssm.length <= len(sequence):
                best, strand, where = _reference_best_site(pssm, sequence)
                for array, value in zip(expected, (best, strand == "-", where)):
                    array[row, column] = value
    assert np.isfinite(expected[0]).sum() > len(sequences) * len(pssms) // 2
    for kwargs in ({}, {"chunk": 7}, {"chunk": 5, "budget": 3000}):
        found = tables.scan(codes, lengths, **kwargs)
        for ours, theirs in zip(found, expected):
            assert np.array_equal(ours, theirs), kwargs


def test_annotation_equals_the_biopython_path(seqlets, jaspar):
    new = annotate_seqlets(seqlets, motifs="JASPAR2024")
    old = reference_annotate_seqlets(seqlets, motifs="JASPAR2024")
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    assert (new.motif_id != "").sum() > len(new) // 3  # mostly real matches, not only misses
    assert new.match_score.isna().sum() >= 2  # the all-N and the too-short seqlets
    assert set(new.match_strand) == {"+", "-", ""}
    # a small library given as motifs, fewer motifs than candidates, and other max_p/candidates
    small = [m for m in jaspar if m.matrix_id in MOTIF_IDS][:3]
    part = seqlets.iloc[:40]
    for kwargs in (
        {"motifs": small},
        {"motifs": small, "candidates": 0},
        {"candidates": 1, "max_p": 1e-5},
        {"candidates": 8},
    ):
        pd.testing.assert_frame_equal(
            annotate_seqlets(part, **kwargs), reference_annotate_seqlets(part, **kwargs), check_exact=True
        )
    # every distribution the reference built (one per candidate motif), equal bin for bin
    built = {motif.matrix_id: motif for motif in jaspar}
    assert _reference_distribution.cache_info().currsize > 100
    for matrix_id, key in list(_REFERENCE_KEYS):
        assert matrix_id in built
        _assert_same_distribution(matrix_id, key)


def test_empty_input_and_non_dna_libraries(seqlets):
    from Bio import motifs as bio_motifs

    empty = annotate_seqlets(seqlets.iloc[:0])
    assert len(empty) == 0 and {"motif_id", "match_p", "motifs_scanned"} <= set(empty.columns)
    protein = bio_motifs.create(["MKV", "MKI"], alphabet="ACDEFGHIKLMNPQRSTVWY")
    with pytest.raises(ValueError, match="wrong alphabet"):  # as Biopython's scanner has always said
        annotate_seqlets(seqlets.iloc[:3], motifs=[protein])


def test_a_flat_motif_is_never_a_candidate(seqlets, jaspar):
    """Every sequence scores the same against it (p = 1); Biopython divided by zero on it."""
    from Bio import motifs as bio_motifs

    flat = bio_motifs.Motif("ACGT", counts={letter: [5.0] * 6 for letter in "ACGT"})
    flat.name, flat.matrix_id = "flat", "X0001.1"
    planted = [m for m in jaspar if m.matrix_id in MOTIF_IDS][:2]
    part = seqlets.iloc[10:30]
    with_flat = annotate_seqlets(part, motifs=[flat, *planted])
    without = annotate_seqlets(part, motifs=planted)
    assert (with_flat.motifs_scanned == 3).all()
    pd.testing.assert_frame_equal(with_flat.drop(columns="motifs_scanned"), without.drop(columns="motifs_scanned"))
    alone = annotate_seqlets(part, motifs=[flat])
    assert (alone.motif_id == "").all() and alone.match_p.isna().all()


def test_a_consensus_site_has_a_p_value_of_at_least_its_probability(jaspar):
    """The best-scoring sequence of a motif occurs with probability >= 4**-width under a uniform
    background, so its p-value can never be 0 (it was, when read from the exact score's bin)."""
    for motif in [m for m in jaspar if m.name in ("RELB", "CTCF", "REST", "SP1")]:
        key = tuple((letter, tuple(float(v) for v in motif.counts[letter])) for letter in "ACGT")
        pssm = _pssm(motif.matrix_id, key)
        found = p_value(_distribution(motif.matrix_id, key), float(pssm.max))
        assert 4.0 ** -len(motif) <= found < 1e-3, motif.name
