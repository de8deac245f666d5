"""Variant effects: VCF reading, windows from an indexed genome, and both alleles explained."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pyfaidx = pytest.importorskip("pyfaidx")

from lrp_domains.bench.data.synthetic import motif_ppms  # noqa: E402
from lrp_domains.bio.sequences.explainer import SequenceExplainer  # noqa: E402
from lrp_domains.bio.sequences.genome import default_window  # noqa: E402
from lrp_domains.bio.variants.effects import (  # noqa: E402
    COLUMNS,
    VariantRecord,
    explain_variants,
    read_vcf,
    variant_windows,
)
from lrp_domains.bio.variants.motifs import MOTIF_COLUMNS  # noqa: E402
from lrp_domains.errors import InputError  # noqa: E402

WINDOW = 200
MOTIF_AT = 500  # 0-based start of the planted CTCF consensus on chr1
CTCF = "".join("ACGT"[i] for i in motif_ppms(["MA0139.2"])["MA0139.2"][1].argmax(0))  # GCCACCAGGGGGCGC


@pytest.fixture(scope="module")
def genome(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    rng = np.random.default_rng(7)
    chr1 = list("".join(rng.choice(list("ACGT"), 1000)))
    chr1[MOTIF_AT : MOTIF_AT + len(CTCF)] = CTCF
    chr2 = "".join(rng.choice(list("ACGT"), 300))
    return {"chr1": "".join(chr1), "chr2": chr2}


@pytest.fixture(scope="module")
def fasta_path(genome: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("genome") / "genome.fa"
    with open(path, "w") as handle:
        for name, sequence in genome.items():
            handle.write(f">{name} test chromosome\n")
            for i in range(0, len(sequence), 60):
                handle.write(sequence[i : i + 60] + "\n")
    return path


@pytest.fixture(scope="module")
def fasta(fasta_path: Path):
    with pyfaidx.Fasta(str(fasta_path), as_raw=True) as handle:
        yield handle


def _other(base: str) -> str:
    return next(b for b in "ACGT" if b != base)


def _variants(g: dict[str, str]) -> list[tuple[str, int, str, str, str]]:
    """(chrom, 1-based pos, id, ref, alt) rows covering every case."""
    c1 = g["chr1"]
    core = MOTIF_AT + 2  # the motif's C with probability 0.99
    return [
        ("chr1", core + 1, "break", c1[core], "A"),
        ("chr1", 851, "far", c1[850], _other(c1[850])),
        ("chr1", 201, "del", c1[200:203], c1[200]),
        ("chr1", 251, "ins", c1[250], c1[250] + "GGG"),
        ("chr1", 401, "mismatch", _other(c1[400]), "T"),
        ("chr2", 10, "end", g["chr2"][9], _other(g["chr2"][9])),
        ("chr2", 295, "end2", g["chr2"][294], _other(g["chr2"][294])),
        ("chr1", 601, "sv", c1[600], "<DEL>"),
        ("chrX", 100, "nochrom", "A", "C"),
        ("chr1", 701, "multi", c1[700], ",".join([b for b in "ACGT" if b != c1[700]][:2])),
    ]


def _write_vcf(path: Path, rows: list[tuple[str, int, str, str, str]], compress: bool = False) -> Path:
    text = "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=1000>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    text += "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t.\tPASS\t.\n" for c, p, i, r, a in rows)
    if compress:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture(scope="module")
def explainer() -> SequenceExplainer:
    return SequenceExplainer.default()


@pytest.fixture(scope="module")
def table(genome, fasta_path, explainer, tmp_path_factory):
    vcf = _write_vcf(tmp_path_factory.mktemp("vcf") / "calls.vcf.gz", _variants(genome), compress=True)
    return explain_variants(explainer, vcf, fasta_path, batch_size=3)


# -- reading --------------------------------------------------------------------------------------
def test_read_vcf_plain_and_gzipped_give_the_same_records_with_multi_allelic_split(genome, tmp_path):
    rows = _variants(genome)
    plain = list(read_vcf(_write_vcf(tmp_path / "a.vcf", rows)))
    zipped = list(read_vcf(_write_vcf(tmp_path / "a.vcf.gz", rows, compress=True)))
    assert plain == zipped
    assert len(plain) == len(rows) + 1  # the multi-allelic line has two alleles
    multi = [r for r in plain if r.id == "multi"]
    assert [r.allele for r in multi] == [0, 1] and len({r.alt for r in multi}) == 2
    assert plain[0].pos == MOTIF_AT + 3 and plain[0].line == 4
    assert [r.status for r in plain if r.id == "sv"] == ["symbolic"]


def test_read_vcf_is_lazy_and_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.vcf"
    path.write_text("#CHROM\tPOS\tID\tREF\tALT\nchr1\t5\t.\tA\tC\nchr1\tfive\t.\tA\tC\n")
    records = read_vcf(path)
    assert next(records).pos == 5
    with pytest.raises(InputError, match=r"bad.vcf, line 3: POS"):
        next(records)
    path.write_text("chr1\t5\t.\tA\n")
    with pytest.raises(InputError, match="line 1"):
        list(read_vcf(path))
    path.write_text("chr1\t5\t.\tA\tR\n")
    with pytest.raises(InputError, match="line 1: ALT"):
        list(read_vcf(path))


@pytest.mark.parametrize("alt", ["<DEL>", "*", "G]17:198982]", "]13:123456]T", ".A", "G.", "."])
def test_symbolic_alleles_are_kept_with_a_status(tmp_path, alt):
    path = tmp_path / "sv.vcf"
    path.write_text(f"chr1\t5\tsv1\tG\t{alt}\n")
    (record,) = read_vcf(path)
    assert record.status == "symbolic" and record.alt == alt


# -- windows --------------------------------------------------------------------------------------
def test_snv_window_is_the_genome_slice_with_one_base_changed(genome, fasta):
    c1 = genome["chr1"]
    p = 850
    windows = variant_windows(VariantRecord("chr1", p + 1, ".", c1[p], "T" if c1[p] != "T" else "A", 1), fasta, 200)
    assert windows.status == "ok" and windows.center == 100 and windows.start == p - 100
    assert windows.ref == c1[p - 100 : p + 100]
    expected = list(windows.ref)
    expected[100] = "T" if c1[p] != "T" else "A"
    assert windows.alt == "".join(expected)
    odd = variant_windows(VariantRecord("chr1", p + 1, ".", c1[p], "A", 1), fasta, 7)
    assert odd.center == 3 and odd.ref == c1[p - 3 : p + 4]


def test_deletion_pulls_bases_in_from_the_right(genome, fasta):
    c1, p = genome["chr1"], 200
    windows = variant_windows(VariantRecord("chr1", p + 1, ".", c1[p : p + 3], c1[p], 1), fasta, WINDOW)
    assert windows.status == "ok"
    assert windows.ref == c1[p - 100 : p + 100]
    assert windows.alt == c1[p - 100 : p] + c1[p] + c1[p + 3 : p + 3 + 99]
    assert len(windows.alt) == WINDOW


def test_insertion_pushes_bases_out_on_the_right(genome, fasta):
    c1, p = genome["chr1"], 250
    windows = variant_windows(VariantRecord("chr1", p + 1, ".", c1[p], c1[p] + "GGG", 1), fasta, WINDOW)
    assert windows.alt == c1[p - 100 : p] + c1[p] + "GGG" + c1[p + 1 : p + 1 + 96]
    assert len(windows.alt) == WINDOW


def test_windows_that_do_not_fit_get_a_status(genome, fasta):
    c2 = genome["chr2"]
    assert variant_windows(VariantRecord("chr2", 100, ".", c2[99], "A", 1), fasta, WINDOW).status == "chrom_end"
    assert variant_windows(VariantRecord("chr2", 202, ".", c2[201], "A", 1), fasta, WINDOW).status == "chrom_end"
    assert variant_windows(VariantRecord("chr2", 201, ".", c2[200], "A", 1), fasta, WINDOW).status == "ok"  # 100..300
    # a deletion needs bases beyond the reference window's end: it fits only if the genome has them
    assert variant_windows(VariantRecord("chr2", 201, ".", c2[200:203], c2[200], 1), fasta, 200).status == "chrom_end"
    assert variant_windows(VariantRecord("chr2", 101, ".", c2[100], "A", 1), fasta, WINDOW).status == "ok"
    long = VariantRecord("chr1", 501, ".", genome["chr1"][500], "A" * 101, 1)
    assert variant_windows(long, fasta, WINDOW).status == "too_long"


def test_ref_comparison_ignores_case(genome, fasta):
    c1 = genome["chr1"]
    assert variant_windows(VariantRecord("chr1", 301, ".", c1[300].lower(), "N", 1), fasta, 20).status == "ok"


# -- explaining -----------------------------------------------------------------------------------
def test_default_window_is_the_training_length(explainer):
    assert default_window(explainer) == 200


def test_unknown_training_length_asks_for_a_window(genome, fasta_path, tmp_path):
    import torch

    model = torch.nn.Sequential(
        torch.nn.Conv1d(4, 2, 3), torch.nn.AdaptiveMaxPool1d(1), torch.nn.Flatten(), torch.nn.Linear(2, 1)
    )
    vcf = _write_vcf(tmp_path / "a.vcf", _variants(genome)[:1])
    with pytest.raises(InputError, match="window="):
        explain_variants(SequenceExplainer(model), vcf, fasta_path)
    small = explain_variants(SequenceExplainer(model), vcf, fasta_path, window=50)
    assert list(small["status"]) == ["ok"]


def test_table_has_one_row_per_allele_with_statuses_and_nan_scores(table):
    assert tuple(table.columns) == COLUMNS + MOTIF_COLUMNS
    status = dict(zip(table["id"], table["status"]))
    assert status["mismatch"] == "ref_mismatch"
    assert status["end"] == "chrom_end" and status["end2"] == "chrom_end"
    assert status["sv"] == "symbolic"
    assert status["nochrom"] == "unknown_chrom"
    assert (table["id"] == "multi").sum() == 2
    assert set(table.loc[table["id"] == "multi", "status"]) == {"ok"}
    bad = table[table["status"] != "ok"]
    assert bad[["ref_score", "alt_score", "delta_score", "delta_relevance"]].isna().all().all()
    ok = table[table["status"] == "ok"]
    assert ok[["ref_score", "alt_score", "delta_score", "delta_relevance"]].notna().all().all()
    # ok rows first, by |delta_score| descending; the others after them, in file order
    assert list(table["status"][: len(ok)]) == ["ok"] * len(ok)
    assert list(ok["delta_score"].abs()) == sorted(ok["delta_score"].abs(), reverse=True)
    assert list(bad["id"]) == ["mismatch", "end", "end2", "sv", "nochrom"]


def test_scores_equal_a_direct_explanation_of_the_two_windows(table, genome, fasta, explainer):
    for name in ("break", "del", "ins"):
        row = table[table["id"] == name].iloc[0]
        record = VariantRecord(row["chrom"], int(row["pos"]), name, row["ref"], row["alt"], 1)
        windows = variant_windows(record, fasta, WINDOW)
        direct = explainer.explain([windows.ref, windows.alt])
        ref_score, alt_score = float(direct.explained[0]), float(direct.explained[1])
        assert math.isclose(row["ref_score"], ref_score, rel_tol=1e-5, abs_tol=1e-6)
        assert math.isclose(row["alt_score"], alt_score, rel_tol=1e-5, abs_tol=1e-6)
        assert math.isclose(row["delta_score"], alt_score - ref_score, rel_tol=1e-5, abs_tol=1e-6)
        per_position = direct.per_position.double()
        expected = float(
            per_position[1, 100 : 100 + len(row["alt"])].sum() - per_position[0, 100 : 100 + len(row["ref"])].sum()
        )
        assert math.isclose(row["delta_relevance"], expected, rel_tol=1e-5, abs_tol=1e-6)


def test_breaking_the_motif_core_matters_more_than_a_distant_snv(table):
    effect = dict(zip(table["id"], table["delta_score"].abs()))
    assert effect["break"] > effect["far"]
    assert table.iloc[0]["id"] == "break"
    row = table[table["id"] == "break"].iloc[0]
    assert row["delta_score"] < 0 and row["delta_relevance"] < 0  # the motif loses score and relevance


def test_plain_vcf_and_open_fasta_give_the_same_table(table, genome, fasta, explainer, tmp_path):
    vcf = _write_vcf(tmp_path / "calls.vcf", _variants(genome))
    again = explain_variants(explainer, vcf, fasta, window=WINDOW)
    assert again.drop(columns=["ref_score", "alt_score", "delta_score", "delta_relevance"]).equals(
        table.drop(columns=["ref_score", "alt_score", "delta_score", "delta_relevance"])
    )
    assert np.allclose(again["delta_score"], table["delta_score"], equal_nan=True, atol=1e-6)


def test_cli_writes_variants_tsv_and_names_bad_options(genome, fasta_path, tmp_path, table):
    from typer.testing import CliRunner

    from lrp_domains.cli import app

    vcf = _write_vcf(tmp_path / "calls.vcf", _variants(genome))
    runner = CliRunner()
    done = runner.invoke(
        app,
        [
            "bio",
            "variants",
            "--vcf",
            str(vcf),
            "--fasta",
            str(fasta_path),
            "--out",
            str(tmp_path / "out"),
            "--batch-size",
            "4",
        ],
    )
    assert done.exit_code == 0, done.output
    written = pd.read_csv(
        tmp_path / "out" / "variants.tsv", sep="\t", keep_default_na=False, na_values=[""], dtype={"id": str}
    )
    assert list(written.columns) == list(table.columns)
    assert written["id"].tolist() == table["id"].tolist()  # the same rows, in the same order
    ok = written.status == "ok"
    np.testing.assert_allclose(written.delta_score[ok], table.delta_score[ok.to_numpy()], rtol=1e-5)
    missing = runner.invoke(
        app,
        [
            "bio",
            "variants",
            "--vcf",
            str(tmp_path / "none.vcf"),
            "--fasta",
            str(fasta_path),
            "--out",
            str(tmp_path / "o2"),
        ],
    )
    assert missing.exit_code == 2 and "error: --vcf" in missing.output and not (tmp_path / "o2").exists()


# -- motifs lost or gained ------------------------------------------------------------------------
def test_breaking_ctcf_loses_ctcf_and_a_far_snv_names_nothing(table):
    row = table[table["id"] == "break"].iloc[0]
    assert row["ref_motif"] == "CTCF" and row["ref_motif_p"] <= 1e-3
    assert row["motif_change"] in ("lost", "weakened")
    far = table[table["id"] == "far"].iloc[0]
    assert far["ref_motif"] == "" and far["alt_motif"] == "" and far["motif_change"] == "none"


def test_motif_change_follows_the_reference_motif_at_its_site():
    from lrp_domains.bio.variants.motifs import motif_change

    assert motif_change("CTCF", 1e-9, math.nan, "") == "lost"  # nothing left to match at the site
    assert motif_change("CTCF", 1e-9, 5e-2, "CTCFL") == "lost"  # a paralog names the broken site: still lost
    assert motif_change("CTCF", 0.0, 2e-6, "CTCFL") == "weakened"  # a perfect match's p underflows to 0
    assert motif_change("CTCF", 1e-6, 2e-6, "") == "kept"
    assert motif_change("CTCF", 1e-6, 2e-6, "REST") == "changed"
    assert motif_change("CTCF", 1e-5, 1e-7, "CTCF") == "strengthened"
    assert motif_change("", math.nan, math.nan, "REST") == "gained"
    assert motif_change("", math.nan, math.nan, "") == "none"


# -- delta tracks -----------------------------------------------------------------------------------
def test_aligned_delta_by_hand():
    from lrp_domains.bio.variants.effects import aligned_delta

    ref = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    alt = np.array([1.5, 2.0, 10.0, 20.0, 7.0, 9.0])
    # SNV at 2: position by position
    np.testing.assert_allclose(aligned_delta(ref, alt, 2, "A", "C"), alt - ref)
    # deletion REF=AT (2 bases) -> ALT=A: ALT's 10 spread over REF's 2 bases; REF index 4 <- ALT index 3
    np.testing.assert_allclose(
        aligned_delta(ref, alt, 2, "AT", "A"), [0.5, 0.0, 5.0 - 3.0, 5.0 - 4.0, 20.0 - 5.0, 7.0 - 6.0]
    )
    # insertion REF=A -> ALT=AGG: ALT's 10+20+7 on REF's one base; REF index 3 <- ALT index 5; REF 4, 5 beyond
    np.testing.assert_allclose(aligned_delta(ref, alt, 2, "A", "AGG"), [0.5, 0.0, 37.0 - 3.0, 9.0 - 4.0, -5.0, -6.0])
    with pytest.raises(InputError, match="does not fit"):
        aligned_delta(ref, alt, 5, "AT", "A")


def test_delta_tracks_sum_to_delta_relevance_and_read_back_from_bigwig(genome, fasta_path, explainer, tmp_path):
    pyBigWig = pytest.importorskip("pyBigWig")
    from lrp_domains.bio.variants.effects import TRACK_COLUMNS, variants_to_bigwig

    vcf = _write_vcf(tmp_path / "calls.vcf", _variants(genome))
    tracked = explain_variants(explainer, vcf, fasta_path, motifs=None, delta_tracks=True)
    assert tuple(tracked.columns) == COLUMNS + TRACK_COLUMNS
    ok = tracked[tracked["status"] == "ok"]
    for _, row in ok.iterrows():
        assert row["window_start"] == row["pos"] - 1 - WINDOW // 2
        over_ref = row["delta_track"][WINDOW // 2 : WINDOW // 2 + len(row["ref"])].sum()
        assert math.isclose(over_ref, row["delta_relevance"], rel_tol=1e-4, abs_tol=1e-5)
    far = tracked[tracked["id"] == "far"]  # the only window on chr1 past base 750: nothing overlaps it
    path = variants_to_bigwig(far, tmp_path / "far.bw", {"chr1": 1000, "chr2": 300})
    with pyBigWig.open(str(path)) as bw:
        start = int(far["window_start"].iloc[0])
        np.testing.assert_allclose(bw.values("chr1", start, start + WINDOW), far["delta_track"].iloc[0], rtol=1e-6)
    with pytest.raises(InputError, match="delta_tracks=True"):
        variants_to_bigwig(tracked.drop(columns=["delta_track"]), tmp_path / "x.bw", {"chr1": 1000})


def test_cli_report_shows_the_top_variants_as_two_row_logos_and_writes_the_track(genome, fasta_path, tmp_path):
    pyBigWig = pytest.importorskip("pyBigWig")
    from typer.testing import CliRunner

    from lrp_domains.cli import app

    vcf = _write_vcf(tmp_path / "calls.vcf", _variants(genome))
    out = tmp_path / "out"
    done = CliRunner().invoke(
        app,
        ["bio", "variants", "--vcf", str(vcf), "--fasta", str(fasta_path), "--out", str(out), "--top", "2", "--bigwig"],
    )
    assert done.exit_code == 0, done.output
    logos = sorted((out / "logos").glob("*.png"))
    assert [p.name for p in logos] == ["001_chr1_503.png", "002_chr1_201.png"]  # break first, then the deletion
    page = (out / "report.html").read_text()
    assert page.count("<figure>") == 2 and "chr1:503 C&gt;A" in page and "CTCF" in page
    written = pd.read_csv(out / "variants.tsv", sep="\t", dtype={"id": str})
    assert "delta_track" not in written and "window_start" in written
    with pyBigWig.open(str(out / "delta_relevance.bw")) as bw:
        assert set(bw.chroms()) == {"chr1", "chr2"}
        assert bw.values("chr1", 502, 503)[0] < 0  # the broken CTCF base loses relevance


def test_a_dna_language_model_explains_variants_too(genome, fasta_path, fasta, tmp_path):
    pytest.importorskip("transformers")
    from lrp_domains.bench.data.nt_like import build_nt_like
    from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer
    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(6, model_max_length=40)
    explainer = TokenSequenceExplainer(build_nt_like(tokenizer, max_tokens=40), tokenizer)
    vcf = _write_vcf(tmp_path / "calls.vcf", _variants(genome))
    table = explain_variants(explainer, vcf, fasta_path, window=198, motifs=None)
    assert (table["status"] == "ok").sum() == 6
    for name in ("break", "del"):
        row = table[table["id"] == name].iloc[0]
        windows = variant_windows(
            VariantRecord(row["chrom"], int(row["pos"]), name, row["ref"], row["alt"], 1), fasta, 198
        )
        direct = explainer.explain([windows.ref, windows.alt])
        assert math.isclose(
            row["delta_score"], float(direct.explained[1] - direct.explained[0]), rel_tol=1e-4, abs_tol=1e-6
        )
        per_position = direct.per_position.double()
        expected = float(
            per_position[1, 99 : 99 + len(row["alt"])].sum() - per_position[0, 99 : 99 + len(row["ref"])].sum()
        )
        assert math.isclose(row["delta_relevance"], expected, rel_tol=1e-4, abs_tol=1e-7)
