"""Genome tracks: bigWig of per-base relevance, BED of seqlets in genome coordinates."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
import torch

pyBigWig = pytest.importorskip("pyBigWig")

from lrp_domains.bio import SequenceExplainer, SequenceExplanation  # noqa: E402
from lrp_domains.bio.sequences.tracks import (  # noqa: E402
    Region,
    load_chrom_sizes,
    parse_region,
    read_windows_bed,
    run_to_bigwig,
    seqlets_to_genome_bed,
    to_bigwig,
)
from lrp_domains.errors import InputError  # noqa: E402

SIZES = {"chr1": 5000, "chr2": 3000, "chr10": 2000}


def _explanation(ids: list[str], lengths: list[int], seed: int = 0) -> SequenceExplanation:
    """A hand-made explanation: per_position = channel_relevance summed over the 4 letters."""
    rng = np.random.default_rng(seed)
    n, width = len(ids), max(lengths)
    channel = torch.zeros(n, 4, width)
    for i, length in enumerate(lengths):
        channel[i, :, :length] = torch.from_numpy(rng.normal(size=(4, length)).astype(np.float32))
    zeros = torch.zeros(n)
    return SequenceExplanation(
        ids=ids,
        sequences=["A" * n_ for n_ in lengths],
        onehot=torch.zeros(n, 4, width),
        output=zeros,
        relevance=channel,
        hypothetical=channel,
        explained=zeros,
        delta=zeros,
        lengths=lengths,
        channel_relevance=channel,
    )


def _read(path, chrom, start, end) -> np.ndarray:
    with pyBigWig.open(str(path)) as bw:
        return np.array(bw.values(chrom, start, end))


def test_parse_region_forms():
    assert parse_region("chr1:1000-1200") == Region("chr1", 1000, 1200, "+")
    assert parse_region("chr1:1,000-1,200") == ("chr1", 1000, 1200, "+")
    assert parse_region("chr1:1000-1200(-)").strand == "-"
    assert parse_region("peak7::chrX:5-10(+)") == Region("chrX", 5, 10, "+")
    assert parse_region("name::chr1:0-4").length == 4
    assert parse_region("chr1:1000-1200", length=200).end == 1200


@pytest.mark.parametrize(
    "bad, words",
    [
        ("seq1", "carries no genome coordinates"),
        ("chr1:1000", "carries no genome coordinates"),
        ("chr1:1200-1000", "not before end"),
        ("chr1:-5-10", "carries no genome coordinates"),
    ],
)
def test_parse_region_bad_ids(bad, words):
    with pytest.raises(InputError, match=words) as error:
        parse_region(bad)
    assert repr(bad) in str(error.value)


def test_parse_region_length_mismatch_names_samtools():
    with pytest.raises(InputError, match="covers 199 bases but the record has 200.*samtools"):
        parse_region("chr1:1001-1200", length=200)


def test_bigwig_equals_explanation_relevance(tmp_path):
    ids = ["chr2:100-160", "chr1:10-50", "chr10:0-30", "chr1:2000-2100"]
    explanation = _explanation(ids, [60, 40, 30, 100])
    path = to_bigwig(explanation, tmp_path / "rel.bw", SIZES)
    per_position = explanation.per_position.numpy()
    with pyBigWig.open(str(path)) as bw:
        assert bw.isBigWig()
        assert bw.chroms() == SIZES
        for i, name in enumerate(ids):
            region = parse_region(name)
            np.testing.assert_allclose(
                bw.values(region.chrom, region.start, region.end),
                per_position[i, : region.length],
                rtol=1e-6,
                atol=1e-6,
            )
        # Bases between windows carry no value.
        assert np.isnan(bw.values("chr1", 50, 60)).all()


def test_bigwig_from_explanation_groups(tmp_path):
    groups = [_explanation(["chr1:0-20", "chr1:20-40"], [20, 20], seed=1), _explanation(["chr2:5-35"], [30], seed=2)]
    to_bigwig(groups, tmp_path / "g.bw", SIZES)
    np.testing.assert_allclose(
        _read(tmp_path / "g.bw", "chr1", 0, 40), groups[0].per_position.numpy().reshape(-1), rtol=1e-6
    )
    np.testing.assert_allclose(_read(tmp_path / "g.bw", "chr2", 5, 35), groups[1].per_position.numpy()[0], rtol=1e-6)


def test_bigwig_minus_strand_is_reversed(tmp_path):
    explanation = _explanation(["chr1:100-110(-)"], [10])
    to_bigwig(explanation, tmp_path / "m.bw", SIZES)
    np.testing.assert_allclose(
        _read(tmp_path / "m.bw", "chr1", 100, 110), explanation.per_position[0].numpy()[::-1], rtol=1e-6
    )


def test_bigwig_from_tuples_and_overlaps_mean(tmp_path):
    a = np.arange(10, dtype=float)  # chr1 0-10
    b = np.full(10, 100.0)  # chr1 5-15, overlaps a on 5-10
    c = np.full(4, -2.0)  # chr1 12-16, overlaps b on 12-15
    d = np.array([7.0, 8.0])  # chr1 16-18, adjacent to c
    path = to_bigwig(
        [("chr1", 5, b), ("chr2", 0, [1.0, 2.0]), ("chr1", 0, a), ("chr1", 12, c), ("chr1", 16, d)],
        tmp_path / "o.bw",
        SIZES,
    )
    expected = np.concatenate([a[:5], (a[5:] + 100) / 2, [100, 100], [(100 - 2) / 2] * 3, [-2.0], [7.0, 8.0]])
    np.testing.assert_allclose(_read(path, "chr1", 0, 18), expected)
    np.testing.assert_allclose(_read(path, "chr2", 0, 2), [1.0, 2.0])
    with pytest.raises(InputError, match="overlap on chr1"):
        to_bigwig([("chr1", 0, a), ("chr1", 5, b)], tmp_path / "refused.bw", SIZES, overlap="error")
    assert not (tmp_path / "refused.bw").exists()


def test_bigwig_chromosome_sizes_respected(tmp_path):
    explanation = _explanation(["chr2:2990-3010"], [20])
    with pytest.raises(InputError, match="outside chr2 \\(length 3000\\)"):
        to_bigwig(explanation, tmp_path / "past.bw", SIZES)
    with pytest.raises(InputError, match="'chrM' is not in the chromosome sizes"):
        to_bigwig([("chrM", 0, [1.0])], tmp_path / "past.bw", SIZES)
    assert list(tmp_path.iterdir()) == []


def test_chrom_sizes_from_fai_and_sizes_file(tmp_path):
    (tmp_path / "g.fa.fai").write_text("chr1\t5000\t6\t60\t61\nchr2\t3000\t5096\t60\t61\n")
    (tmp_path / "g.sizes").write_text("chr1 5000\nchr2\t3000\n")
    assert load_chrom_sizes(tmp_path / "g.fa.fai") == {"chr1": 5000, "chr2": 3000}
    assert load_chrom_sizes(tmp_path / "g.sizes") == {"chr1": 5000, "chr2": 3000}
    (tmp_path / "bad.sizes").write_text("chr1\tlots\n")
    with pytest.raises(InputError, match="bad.sizes, line 1"):
        load_chrom_sizes(tmp_path / "bad.sizes")


@pytest.mark.parametrize("gzipped", [False, True])
def test_windows_bed_plain_and_gzip(tmp_path, gzipped):
    text = "track name=w\nchr1\t10\t20\tseqA\t0\t+\nchr2\t5\t15\tseqB\t0\t-\nchr1\t40\t50\tseqC\n"
    path = tmp_path / ("w.bed.gz" if gzipped else "w.bed")
    path.write_bytes(gzip.compress(text.encode()) if gzipped else text.encode())
    windows = read_windows_bed(path)
    assert windows == {
        "seqA": Region("chr1", 10, 20, "+"),
        "seqB": Region("chr2", 5, 15, "-"),
        "seqC": Region("chr1", 40, 50, "+"),
    }
    explanation = _explanation(["seqA", "seqB", "seqC"], [10, 10, 10])
    to_bigwig(explanation, tmp_path / "w.bw", SIZES, regions=path)
    values = explanation.per_position.numpy()
    np.testing.assert_allclose(_read(tmp_path / "w.bw", "chr1", 10, 20), values[0], rtol=1e-6)
    np.testing.assert_allclose(_read(tmp_path / "w.bw", "chr2", 5, 15), values[1][::-1], rtol=1e-6)
    with pytest.raises(InputError, match="'other' is not a name in the windows BED"):
        to_bigwig(_explanation(["other"], [10]), tmp_path / "x.bw", SIZES, regions=path)


def test_windows_bed_bad_rows(tmp_path):
    (tmp_path / "short.bed").write_text("chr1\t10\t20\n")
    with pytest.raises(InputError, match="short.bed, line 1: a windows BED needs 4"):
        read_windows_bed(tmp_path / "short.bed")
    (tmp_path / "twice.bed").write_text("chr1\t10\t20\ta\nchr1\t30\t40\ta\n")
    with pytest.raises(InputError, match="line 2: the name 'a' appears twice"):
        read_windows_bed(tmp_path / "twice.bed")


def _bed(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, names=["chrom", "start", "end", "name", "score", "strand"])


def _check_coordinates(bed: pd.DataFrame, sizes: dict[str, int]) -> None:
    assert (bed["start"] >= 0).all() and (bed["start"] < bed["end"]).all()
    assert all(end <= sizes[chrom] for chrom, end in zip(bed["chrom"], bed["end"]))
    assert bed.equals(bed.sort_values(["chrom", "start", "end"], kind="stable").reset_index(drop=True))


def test_seqlets_in_genome_coordinates(tmp_path):
    seqlets = pd.DataFrame(
        {
            "id": ["chr2:100-160", "chr1:1000-1050(-)", "chr1:1000-1050(-)", "site::chr1:10-50"],
            "start": [5, 0, 30, 2],
            "end": [12, 7, 40, 9],
            "strand": ["+", "+", "+", "+"],
            "relevance": [1.5, 2.0, 0.25, -0.5],
            "motif_name": [None, "CTCF", None, "GATA1"],
            "match_strand": [None, "+", None, "-"],
        }
    )
    path = seqlets_to_genome_bed(seqlets, tmp_path / "seqlets.bed", chrom_sizes=SIZES)
    bed = _bed(path)
    _check_coordinates(bed, SIZES)
    # Hand-computed: + region start + offset; - region end - offset end, strands flipped.
    assert bed.values.tolist() == [
        ["chr1", 12, 19, "GATA1", -0.5, "-"],
        ["chr1", 1010, 1020, "seqlet", 0.25, "-"],
        ["chr1", 1043, 1050, "CTCF", 2.0, "-"],
        ["chr2", 105, 112, "seqlet", 1.5, "+"],
    ]


def test_seqlets_bed_checks(tmp_path):
    seqlets = pd.DataFrame({"id": ["chr2:2990-3010"], "start": [12], "end": [18], "strand": ["+"], "relevance": [1.0]})
    with pytest.raises(InputError, match="outside chr2"):
        seqlets_to_genome_bed(seqlets, tmp_path / "s.bed", chrom_sizes=SIZES)
    assert not (tmp_path / "s.bed").exists()
    beyond = seqlets.assign(id="chr1:0-15")
    with pytest.raises(InputError, match="lies outside the record's 15 bases"):
        seqlets_to_genome_bed(beyond, tmp_path / "s.bed")
    with pytest.raises(InputError, match="'plain' carries no genome coordinates"):
        seqlets_to_genome_bed(seqlets.assign(id="plain"), tmp_path / "s.bed")


@pytest.fixture(scope="module")
def genome_run(tmp_path_factory):
    """A real dataset run over overlapping 200-bp windows (stride 150) of a random 1,400-bp chr1
    and a 200-bp (-) window of chr2, with ids chrom:start-end."""
    from lrp_domains.run import explain_dataset

    folder = tmp_path_factory.mktemp("genome_run")
    rng = np.random.default_rng(5)
    genome = "".join(rng.choice(list("ACGT"), size=1400))
    records = [(f"chr1:{s}-{s + 200}", genome[s : s + 200]) for s in range(0, 1201, 150)]
    records.append(("chr2:300-500(-)", "".join(rng.choice(list("ACGT"), size=200))))
    fasta = folder / "windows.fa"
    fasta.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records))
    out = folder / "run"
    explain_dataset(SequenceExplainer.default(), fasta, out, shard_size=3, progress=False)
    return out, records


def test_run_to_bigwig_equals_relevance(genome_run, tmp_path):
    from lrp_domains.run import read_results

    out, records = genome_run
    rows = read_results(out)
    assert len(rows) == len(records)
    sizes = {"chr1": 1400, "chr2": 1000}
    path = run_to_bigwig(out, tmp_path / "run.bw", sizes)
    # Expected: each base the mean of the windows covering it.
    sums, counts = np.zeros(1400), np.zeros(1400)
    for name, relevance in zip(rows["id"], rows["relevance"]):
        region = parse_region(name)
        if region.chrom == "chr1":
            sums[region.start : region.end] += np.asarray(relevance)
            counts[region.start : region.end] += 1
    with pyBigWig.open(str(path)) as bw:
        got = np.array(bw.values("chr1", 0, 1400))
        assert np.abs(got).max() > 0
        np.testing.assert_allclose(got, sums / counts, rtol=1e-5, atol=1e-6)
        minus = np.asarray(rows.loc[rows["id"] == "chr2:300-500(-)", "relevance"].iloc[0])
        np.testing.assert_allclose(bw.values("chr2", 300, 500), minus[::-1], rtol=1e-5, atol=1e-6)
    # A window without overlap equals its relevance exactly (float32): the first 150 bases.
    np.testing.assert_allclose(got[:150], np.asarray(rows["relevance"].iloc[0])[:150], rtol=1e-6, atol=1e-7)
    with pytest.raises(InputError, match="overlap on chr1"):
        run_to_bigwig(out, tmp_path / "no.bw", sizes, overlap="error")
    with pytest.raises(InputError, match="outside chr1 \\(length 1000\\)"):
        run_to_bigwig(out, tmp_path / "no.bw", {"chr1": 1000, "chr2": 1000})
    assert not (tmp_path / "no.bw").exists()


def test_run_to_bigwig_with_windows_bed(genome_run, tmp_path):
    from lrp_domains.run import read_results

    out, records = genome_run
    rows = read_results(out)
    # Place the records elsewhere by name: one window per record, no overlaps, on chr3.
    lines = [f"chr3\t{i * 300}\t{i * 300 + 200}\t{name}\n" for i, (name, _) in enumerate(records)]
    bed = tmp_path / "windows.bed.gz"
    bed.write_bytes(gzip.compress("".join(lines).encode()))
    path = run_to_bigwig(out, tmp_path / "w.bw", {"chr3": 300 * len(records)}, windows=bed)
    with pyBigWig.open(str(path)) as bw:
        for i, relevance in enumerate(rows["relevance"]):
            np.testing.assert_allclose(bw.values("chr3", i * 300, i * 300 + 200), relevance, rtol=1e-6, atol=1e-7)
