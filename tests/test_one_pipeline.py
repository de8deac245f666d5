"""One pipeline per job: a convenience command (``bio sequences``, ``bio genes``, ``text
explain-file``, ``bio variants``) is a run plus the steps on it, so it writes the same rows as
``lrp-domains run KIND``, and every take-away (report, h5ad, tracks) is a step reading the run."""

from __future__ import annotations

from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from models import EXPRESSION_GENES
from typer.testing import CliRunner

from lrp_domains.bench.data.synthetic import make_dataset, write_fasta
from lrp_domains.cli import app
from lrp_domains.run import read_results

TESTS = Path(__file__).resolve().parent


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _same_rows(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(read_results(a), read_results(b))


def _h5ad(path: Path, n: int = 9) -> Path:
    rng = np.random.default_rng(0)
    anndata.AnnData(
        rng.normal(size=(n, len(EXPRESSION_GENES))).astype(np.float32),
        obs=pd.DataFrame({"cell_type": list("ABC" * n)[:n]}, index=[f"cell{i}" for i in range(n)]),
        var=pd.DataFrame(index=EXPRESSION_GENES),
    ).write_h5ad(path)
    return path


def test_bio_sequences_writes_the_rows_of_run_sequences_and_its_report_reads_them(tmp_path):
    fasta = write_fasta(tmp_path / "in.fa", make_dataset(7, seed=4))
    report = run("bio", "sequences", fasta, "--out", tmp_path / "R", "--motifs", "none", "--no-progress")
    assert report.exit_code == 0, report.output
    alone = run("run", "sequences", fasta, "--out", tmp_path / "D", "--option", "ledger=yes", "--no-progress")
    assert alone.exit_code == 0, alone.output
    _same_rows(tmp_path / "R" / "run", tmp_path / "D")
    again = run("run", "report", tmp_path / "D", "--out", tmp_path / "R2")
    assert again.exit_code == 0, again.output
    for name in ("relevance.parquet", "seqlets.csv", "per_position.tsv"):
        assert (tmp_path / "R" / name).read_bytes() == (tmp_path / "R2" / name).read_bytes(), name
    rows = read_results(tmp_path / "D")
    table = pd.read_parquet(tmp_path / "R" / "relevance.parquet")
    for record in rows.itertuples():  # the report's relevance is the run's, record by record
        mine = table[table.id == record.id]
        np.testing.assert_allclose(mine.relevance.to_numpy(), np.asarray(record.relevance), rtol=1e-6, atol=1e-9)
    with np.load(tmp_path / "R" / "attr.npz") as attr:
        expected = np.stack([np.asarray(h, dtype=np.float32).reshape(4, -1) for h in rows.hypothetical])
        np.testing.assert_allclose(attr["arr_0"], expected, rtol=1e-6, atol=1e-9)


def test_a_second_bio_sequences_resumes_and_another_input_replaces_the_run(tmp_path):
    fasta = write_fasta(tmp_path / "in.fa", make_dataset(4, seed=4))
    args = ("bio", "sequences", fasta, "--out", tmp_path / "R", "--motifs", "none", "--no-progress")
    assert run(*args).exit_code == 0
    shard = tmp_path / "R" / "run" / "shard-00000.parquet"
    before = shard.stat().st_mtime_ns
    assert run(*args).exit_code == 0
    assert shard.stat().st_mtime_ns == before  # resumed: nothing recomputed
    other = write_fasta(tmp_path / "other.fa", make_dataset(3, seed=9))
    with pytest.warns(UserWarning, match="held a run of other input or settings"):
        replaced = run("bio", "sequences", other, "--out", tmp_path / "R", "--motifs", "none", "--no-progress")
    assert replaced.exit_code == 0, replaced.output
    assert len(read_results(tmp_path / "R" / "run")) == 3
    assert len(pd.read_csv(tmp_path / "R" / "per_position.tsv", sep="\t", header=None)) == 3


def test_bio_genes_writes_the_rows_of_run_genes_and_the_h5ad_step_reads_them(tmp_path, monkeypatch):
    monkeypatch.chdir(TESTS)
    data = _h5ad(tmp_path / "cells.h5ad")
    model = ("--model", "models:expression_mlp")
    report = run("bio", "genes", data, *model, "--label-column", "cell_type", "--out", tmp_path / "R", "--no-progress")
    assert report.exit_code == 0, report.output
    alone = run(
        "run",
        "genes",
        data,
        *model,
        "--column",
        "cell_type",
        "--out",
        tmp_path / "D",
        "--option",
        "ledger=yes",
        "--no-progress",
    )
    assert alone.exit_code == 0, alone.output
    _same_rows(tmp_path / "R" / "run", tmp_path / "D")
    rows = read_results(tmp_path / "D")
    assert list(rows.target) == list("ABC" * 3)  # each cell explained for its own label
    relevance = pd.read_parquet(tmp_path / "R" / "relevance.parquet")
    np.testing.assert_allclose(relevance.to_numpy(), np.stack(rows.relevance.map(np.asarray)), rtol=1e-6)
    assert (tmp_path / "R" / "de_overlap.csv").exists()  # the .h5ad input, read again: the DE comparison
    done = run("run", "h5ad", tmp_path / "D", "--out", tmp_path / "explained.h5ad")
    assert done.exit_code == 0, done.output
    explained = anndata.read_h5ad(tmp_path / "explained.h5ad")
    np.testing.assert_allclose(explained.layers["lrp"], np.stack(rows.relevance.map(np.asarray)), rtol=1e-6)
    assert list(explained.obs["lrp_target"]) == list(rows.target)
    assert list(explained.obs["lrp_status"]) == ["ok"] * 9


def test_run_report_refuses_options_its_report_does_not_take(tmp_path, monkeypatch):
    monkeypatch.chdir(TESTS)
    data = _h5ad(tmp_path / "cells.h5ad")
    assert (
        run(
            "run", "genes", data, "--model", "models:expression_mlp", "--out", tmp_path / "D", "--no-progress"
        ).exit_code
        == 0
    )
    refused = run("run", "report", tmp_path / "D", "--out", tmp_path / "R", "--motifs", "JASPAR2024")
    assert refused.exit_code == 2 and "the genes report takes no motifs" in refused.output, refused.output
    into_run = run("run", "report", tmp_path / "D", "--out", tmp_path / "D")
    assert into_run.exit_code == 2 and "holds an lrp-domains run" in into_run.output


def test_bio_sequences_on_genome_regions_writes_seqlets_in_genome_coordinates(tmp_path):
    rng = np.random.default_rng(3)
    chrom = "".join(rng.choice(list("ACGT"), 3000))
    (tmp_path / "genome.fa").write_text(">chr2\n" + "\n".join(chrom[i : i + 60] for i in range(0, 3000, 60)) + "\n")
    (tmp_path / "peaks.bed").write_text("chr2\t400\t700\tp1\t0\t+\nchr2\t1500\t1800\tp2\t0\t-\n")
    done = run(
        "bio",
        "sequences",
        "--regions",
        tmp_path / "peaks.bed",
        "--genome",
        tmp_path / "genome.fa",
        "--out",
        tmp_path / "R",
        "--motifs",
        "none",
        "--no-progress",
    )
    assert done.exit_code == 0, done.output
    rows = read_results(tmp_path / "R" / "run")
    assert list(rows.id) == ["chr2:450-650(+)", "chr2:1550-1750(-)"]
    lines = [
        line.split("\t")
        for line in (tmp_path / "R" / "seqlets.bed").read_text().splitlines()
        if not line.startswith(("#", "track"))
    ]
    assert lines and all(fields[0] == "chr2" and 450 <= int(fields[1]) < int(fields[2]) <= 1750 for fields in lines)


def test_text_explain_file_writes_the_rows_of_run_text_and_tables_equal_direct_explanations(tmp_path, model_dir):
    from lrp_domains.text import TextExplainer

    texts = ["a good film", "bad, boring and long", "I loved it", "not great", "fine"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    done = run(
        "text",
        "explain-file",
        tmp_path / "in.txt",
        "--out",
        tmp_path / "R",
        "--model",
        model_dir,
        "--shard-size",
        "2",
        "--no-progress",
    )
    assert done.exit_code == 0, done.output
    alone = run(
        "run",
        "text",
        tmp_path / "in.txt",
        "--out",
        tmp_path / "D",
        "--model",
        model_dir,
        "--shard-size",
        "2",
        "--option",
        "ledger=yes",
        "--no-progress",
    )
    assert alone.exit_code == 0, alone.output
    _same_rows(tmp_path / "R" / "run", tmp_path / "D")
    direct = TextExplainer.from_pretrained(model_dir).explain(texts)
    tokens = pd.read_csv(tmp_path / "R" / "tokens.csv")
    for index, result in enumerate(direct):
        mine = tokens[tokens.text_index == index]
        assert list(mine.token) == result.tokens and list(mine.start) == [s for s, _ in result.token_spans]
        np.testing.assert_allclose(mine.relevance, result.token_relevance.double().numpy(), rtol=1e-5, atol=1e-7)
    assert sorted(p.name for p in (tmp_path / "R" / "html").glob("*.html")) == [f"{i:06d}.html" for i in range(5)]
    page = run("run", "report", tmp_path / "D", "--out", tmp_path / "P")
    assert page.exit_code == 0, page.output
    assert all(word in (tmp_path / "P" / "report.html").read_text() for word in ("loved", "boring"))


def test_run_report_of_a_dna_language_model_run(tmp_path):
    from test_dna_language_models import _esm

    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(3)
    _esm(tokenizer, "rotary").float().save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    write_fasta(tmp_path / "in.fa", make_dataset(4, seed=3))
    assert (
        run(
            "run", "dna-lm", tmp_path / "in.fa", "--model", tmp_path / "lm", "--out", tmp_path / "D", "--no-progress"
        ).exit_code
        == 0
    )
    done = run("run", "report", tmp_path / "D", "--out", tmp_path / "R", "--motifs", "none")
    assert done.exit_code == 0, done.output
    rows = read_results(tmp_path / "D")
    table = pd.read_parquet(tmp_path / "R" / "relevance.parquet")
    np.testing.assert_allclose(table[table.id == rows.id[0]].relevance, rows.relevance[0], rtol=1e-6, atol=1e-9)


def test_bio_variants_writes_the_rows_of_run_variants_and_its_table_is_the_api_table(tmp_path):
    from lrp_domains.bio import SequenceExplainer
    from lrp_domains.bio.variants.effects import explain_variants

    rng = np.random.default_rng(1)
    chrom = "".join(rng.choice(list("ACGT"), 1200))
    (tmp_path / "genome.fa").write_text(">chr1\n" + "\n".join(chrom[i : i + 60] for i in range(0, 1200, 60)) + "\n")
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    for n, pos in enumerate((300, 450, 600, 750)):
        lines.append(f"chr1\t{pos}\tv{n}\t{chrom[pos - 1]}\t{'A' if chrom[pos - 1] != 'A' else 'C'}\t.\t.\t.")
    lines.append("chr9\t100\tnochrom\tA\tC\t.\t.\t.")
    (tmp_path / "calls.vcf").write_text("\n".join(lines) + "\n")
    vcf, genome = tmp_path / "calls.vcf", tmp_path / "genome.fa"
    done = run(
        "bio",
        "variants",
        "--vcf",
        vcf,
        "--fasta",
        genome,
        "--out",
        tmp_path / "R",
        "--motifs",
        "none",
        "--bigwig",
        "--top",
        "2",
    )
    assert done.exit_code == 0, done.output
    alone = run(
        "run",
        "variants",
        vcf,
        "--option",
        f"fasta={genome}",
        "--option",
        "motifs=none",
        "--option",
        "delta_tracks=yes",
        "--out",
        tmp_path / "D",
        "--no-progress",
    )
    assert alone.exit_code == 0, alone.output
    _same_rows(tmp_path / "R" / "run", tmp_path / "D")
    table = pd.read_csv(tmp_path / "R" / "variants.tsv", sep="\t")
    api = explain_variants(SequenceExplainer.default(), vcf, genome, motifs=None)
    assert list(table.id) == list(api.id) and list(table.status) == list(api.status)  # largest effect first
    np.testing.assert_allclose(table.delta_score, api.delta_score, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert (tmp_path / "R" / "delta_relevance.bw").exists() and (tmp_path / "R" / "report.html").exists()
