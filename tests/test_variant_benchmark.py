"""The synthetic variant-effect benchmark: the generator's ground truth, and the default CNN on it."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyfaidx
import pytest
import torch

from lrp_domains.bench.data.synthetic import MOTIF_IDS, make_dataset, motif_ppms
from lrp_domains.bench.data.variants import DETECTED_MOTIF_IDS, make_variant_benchmark
from lrp_domains.bench.genomics.variants import aurocs, category_means, labelled, naming, planted_library
from lrp_domains.bio import SequenceExplainer, explain_variants, read_vcf
from lrp_domains.bio.sequences.synthetic_cnn import load_default_sequence_model
from lrp_domains.errors import InputError

WINDOW = 200
COMPLEMENT = str.maketrans("ACGT", "TGCA")


def _bits(ppm: np.ndarray) -> np.ndarray:
    """Information per column (rows A, C, G, T), written out here independently of the library."""
    return 2.0 + (ppm * np.log2(np.clip(ppm, 1e-300, None))).sum(0)


def _log_odds(sequence: str, ppm: np.ndarray) -> float:
    """log2 P(sequence | ppm) / P(sequence | uniform)."""
    return float(sum(np.log2(ppm["ACGT".index(b), j] / 0.25) for j, b in enumerate(sequence)))


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    return make_variant_benchmark(
        tmp_path_factory.mktemp("variant-bench"), n_chroms=2, chrom_length=6000, n_motifs=40, seed=0, window=WINDOW
    )


@pytest.fixture(scope="module")
def genome(bench):
    with pyfaidx.Fasta(str(bench.fasta), as_raw=True) as handle:
        yield {name: str(handle[name][:]) for name in handle.keys()}


@pytest.fixture(scope="module")
def source():
    """matrix ID -> (name, PPM as JASPAR writes it): the generator's source, read from the synthetic module."""
    return motif_ppms()


# -- the generator ----------------------------------------------------------------------------------
def test_planted_motifs_are_where_the_generator_says(bench, genome, source):
    assert bench.fasta.with_name("genome.fa.fai").is_file()
    assert sorted(genome) == ["chr1", "chr2"] and all(len(s) == 6000 for s in genome.values())
    assert len(bench.motifs) == 40 and {m.motif_id for m in bench.motifs} <= set(DETECTED_MOTIF_IDS)
    assert {m.strand for m in bench.motifs} == {"+", "-"}
    bed = [line.split("\t") for line in bench.bed.read_text().splitlines()]
    palindromes = 0
    for m, row in zip(bench.motifs, bed):
        assert row == [m.chrom, str(m.start), str(m.end), m.name, "0", m.strand]
        name, ppm = source[m.motif_id]
        assert m.name == name and m.end - m.start == ppm.shape[1]
        site = genome[m.chrom][m.start : m.end]
        # read on the motif's own strand, the site is a sample of the JASPAR PPM: it scores well above
        # background; read on the other strand it scores below background unless the motif is a palindrome
        own = site if m.strand == "+" else site.translate(COMPLEMENT)[::-1]
        other = site.translate(COMPLEMENT)[::-1] if m.strand == "+" else site
        assert _log_odds(own, ppm) > 0.3 * _bits(ppm).sum(), (m, own)
        consensus = "".join("ACGT"[i] for i in ppm.argmax(0))
        if _log_odds(consensus.translate(COMPLEMENT)[::-1], ppm) > 0:
            palindromes += 1
        else:
            assert _log_odds(other, ppm) < 0, (m, other)
    assert palindromes < len(bench.motifs) // 2  # the strand check above ran on most motifs


def test_motifs_are_spaced_so_every_window_holds_at_most_one(bench):
    for a, b in zip(bench.motifs, bench.motifs[1:]):
        if a.chrom == b.chrom:
            assert b.start - a.end > WINDOW


def test_break_variants_hit_a_core_column_with_a_disfavoured_alt(bench, genome, source):
    broken = [v for v in bench.variants if v.category == "break"]
    assert len(broken) == 40 and sorted(v.motif for v in broken) == list(range(40))
    for v in broken:
        m = bench.motifs[v.motif]
        ppm = source[m.motif_id][1]
        oriented = ppm if m.strand == "+" else ppm[::-1, ::-1]
        p0 = v.pos - 1
        assert m.start <= p0 < m.end and p0 - m.start == v.column and v.distance == 0
        assert genome[v.chrom][p0] == v.ref
        column = oriented[:, v.column]
        assert _bits(oriented)[v.column] >= 1.0
        assert "ACGT"[column.argmax()] == v.ref and "ACGT"[column.argmin()] == v.alt
        assert column["ACGT".index(v.alt)] < 0.05


def test_flank_and_far_variants_sit_where_their_category_says(bench, genome):
    def distance(chrom: str, p0: int) -> int:
        return min(max(m.start - p0, p0 - (m.end - 1), 0) for m in bench.motifs if m.chrom == chrom)

    flank = [v for v in bench.variants if v.category == "flank"]
    far = [v for v in bench.variants if v.category == "far"]
    assert len(flank) == 40 and len(far) == 40
    for v in flank:
        assert 1 <= distance(v.chrom, v.pos - 1) <= 5
        m = bench.motifs[v.motif]
        assert v.pos - 1 in (*range(m.start - 5, m.start), *range(m.end, m.end + 5))
    for v in far:
        assert distance(v.chrom, v.pos - 1) > WINDOW // 2 and v.motif == -1
        start = v.pos - 1 - WINDOW // 2
        assert start >= 0 and start + WINDOW <= len(genome[v.chrom])  # the window fits
    for v in flank + far:
        assert genome[v.chrom][v.pos - 1] == v.ref != v.alt


def test_the_vcf_reads_back_with_its_labels(bench, genome):
    records = list(read_vcf(bench.vcf))
    assert [(r.chrom, r.pos, r.id, r.ref, r.alt) for r in records] == [
        (v.chrom, v.pos, v.id, v.ref, v.alt) for v in bench.variants
    ]
    assert all(r.status == "ok" and genome[r.chrom][r.pos - 1] == r.ref for r in records)
    text = bench.vcf.read_text()
    assert text.startswith("##fileformat=VCFv4.2\n")
    info = dict(re.findall(r"\t(\w+_\d{4})\t[ACGT]\t[ACGT]\t\.\tPASS\t(\S+)", text))
    for v in bench.variants:
        fields = dict(item.split("=") for item in info[v.id].split(";"))
        assert fields["CAT"] == v.category and fields["MOTIF"] == (bench.motif_name(v) or ".")
    table = bench.table.read_text().splitlines()
    assert len(table) == 1 + 120 and table[0].startswith("id\tchrom\tpos\tref\talt\tcategory")


def test_the_same_seed_gives_the_same_benchmark_and_short_chromosomes_are_refused(bench, tmp_path):
    again = make_variant_benchmark(tmp_path / "again", n_chroms=2, chrom_length=6000, n_motifs=40, seed=0)
    assert again.chromosomes == bench.chromosomes and again.variants == bench.variants
    other = make_variant_benchmark(tmp_path / "other", n_chroms=2, chrom_length=6000, n_motifs=40, seed=1)
    assert other.chromosomes != bench.chromosomes
    with pytest.raises(InputError, match="chrom_length=2000 cannot hold"):
        make_variant_benchmark(tmp_path / "short", n_chroms=1, chrom_length=2000, n_motifs=20)
    with pytest.raises(InputError, match="motif_ids"):
        make_variant_benchmark(tmp_path / "unknown", motif_ids=["MA9999.1"])


# -- the default CNN on it ---------------------------------------------------------------------------
def test_the_planted_motifs_are_those_the_default_cnn_calls_on_their_own():
    model = load_default_sequence_model().eval()
    recall = {}
    for motif_id in MOTIF_IDS:
        data = make_dataset(200, seed=7, positive_fraction=1.0, motifs_per_sequence=(1, 1), motif_ids=[motif_id])
        with torch.no_grad():
            recall[motif_id] = float((model(data.onehot).reshape(-1) > 0).float().mean())
    # measured (200 each, seed 7): listed 0.71 (ELK1) to 0.965 (NFKB1); the others 0.205 (GATA1) to 0.505 (Yy1)
    listed = min(recall[m] for m in DETECTED_MOTIF_IDS)
    others = max(recall[m] for m in MOTIF_IDS if m not in DETECTED_MOTIF_IDS)
    assert listed >= 0.6 and listed >= others + 0.1, recall


@pytest.fixture(scope="module")
def explained(bench):
    table = explain_variants(SequenceExplainer.default(), bench.vcf, bench.fasta, motifs=planted_library())
    return labelled(table, bench)


def test_motif_breaking_variants_rank_first(explained):
    # measured on this seed: AUROC 0.917 (|delta_score|), 0.904 (|delta_relevance|); seeds 0-5: >= 0.904
    category = explained["category"].to_numpy()
    score_all, score_far = aurocs(explained["delta_score"].to_numpy(), category)
    relevance_all, relevance_far = aurocs(explained["delta_relevance"].to_numpy(), category)
    assert score_all >= 0.88 and relevance_all >= 0.85
    assert score_far >= 0.9 and relevance_far >= 0.9
    top = explained.head(20)  # explain_variants sorts by |delta_score|
    assert (top["category"] == "break").mean() >= 0.9


def test_far_variants_have_near_zero_delta(explained):
    # measured: far / break mean |delta| 0.028 (score), 0.017 (relevance); seeds 0-5: <= 0.053
    category = explained["category"].to_numpy()
    for column in ("delta_score", "delta_relevance"):
        means = category_means(explained[column].to_numpy(), category)
        assert means["far"] <= 0.1 * means["break"], (column, means)
        assert means["far"] < means["flank"] < means["break"], (column, means)


def test_the_lost_motif_is_named(explained):
    # measured: 0.875 of break variants named as their planted motif (10 synthetic motifs to choose
    # from); seeds 0-5: 0.875-0.95. Far variants' windows (no planted motif) get a name in 0.1.
    found = naming(explained)
    assert found["named"] >= 0.75
    assert found["far_named"] <= 0.3


# -- the bench's scoring helpers, on hand-computed cases ---------------------------------------------
def test_aurocs_rank_break_against_the_rest_by_size_and_naming_counts_break_and_far_rows():
    category = np.array(["break", "break", "flank", "far", "far"])
    # |score|: break 3 and 0.2 against 1, 0.5, 0.1: 3 wins 3 pairs, 0.2 wins 1 of 3 -> 4/6; against far only 3/4
    all_, far = aurocs(np.array([-3.0, 0.2, 1.0, 0.5, -0.1]), category)
    assert all_ == pytest.approx(4 / 6) and far == pytest.approx(3 / 4)
    assert category_means(np.array([-3.0, 1.0, -1.0, 0.5, -0.1]), category) == pytest.approx(
        {"break": 2.0, "flank": 1.0, "far": 0.3}
    )
    table = pd.DataFrame(
        {
            "category": category,
            "planted": ["CTCF", "SP1", "SP1", "", ""],
            "ref_motif": ["CTCF", "SP2", "", "", "REST"],
            "motif_change": ["lost", "", "", "", ""],
        }
    )
    found = naming(table, {"SP1": {"Kruppel"}, "SP2": {"Kruppel"}, "CTCF": {"zinc fingers"}})
    assert found == pytest.approx({"named": 0.5, "lost": 0.5, "far_named": 0.5, "family": 1.0})
