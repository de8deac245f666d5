"""Variants as a dataset source: a VCF explained shard by shard through the explainer contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyfaidx")

import test_variants as base  # noqa: E402

# the genome, its FASTA and the explainer of the variant tests
genome, fasta_path, explainer = base.genome, base.fasta_path, base.explainer
_variants, _write_vcf = base._variants, base._write_vcf

from lrp_domains import domains  # noqa: E402
from lrp_domains.bio.variants.effects import explain_variants  # noqa: E402
from lrp_domains.bio.variants.explainer import RUN_COLUMNS, VariantExplainer, VcfRecords  # noqa: E402
from lrp_domains.errors import InputError  # noqa: E402
from lrp_domains.run import explain_dataset, read_results  # noqa: E402


@pytest.fixture(scope="module")
def vcf(genome, tmp_path_factory):
    return _write_vcf(tmp_path_factory.mktemp("run") / "calls.vcf.gz", _variants(genome), compress=True)


def test_variants_is_a_registered_kind():
    assert "variants" in domains.kinds() and domains.get("variants") is VariantExplainer


def test_shards_hold_whole_lines_and_every_allele_once(vcf):
    reader = VcfRecords(vcf)
    shards = reader.shards(3)
    alleles = [r for shard in shards for r in reader.read(shard)[1]]
    from lrp_domains.bio.variants.effects import read_vcf

    assert alleles == list(read_vcf(vcf))  # in order, none lost or repeated
    assert [s.start for s in shards] == [0] + [s.stop for s in shards[:-1]]
    for shard in shards:
        ids, records = reader.read(shard)
        assert len(ids) == len(records) == shard.size
        assert len({r.line for r in records if r.id == "multi"}) <= 1  # the multi-allelic line is not cut
    assert all(s.size >= 3 for s in shards[:-1])


def test_run_rows_equal_the_api_table_in_file_order(vcf, fasta_path, explainer, tmp_path):
    wrapped = VariantExplainer(explainer)
    explain_dataset(wrapped, vcf, tmp_path / "run", shard_size=4, progress=False, fasta=str(fasta_path))
    rows = read_results(tmp_path / "run")
    assert list(rows.columns) == ["row", "id", *RUN_COLUMNS]
    api = explain_variants(explainer, vcf, fasta_path, sort=False)
    assert rows["variant_id"].tolist() == api["id"].tolist() and rows["status"].tolist() == api["status"].tolist()
    assert rows["row"].tolist() == list(range(len(api)))
    np.testing.assert_allclose(rows["delta_score"], api["delta_score"], rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(rows["delta_relevance"], api["delta_relevance"], rtol=1e-5, atol=1e-6, equal_nan=True)
    assert rows["motif_change"].tolist() == api["motif_change"].tolist()
    assert rows.loc[rows["variant_id"] == "break", "ref_motif"].item() == "CTCF"
    # resuming a finished run explains nothing again; other options are a different run
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "run").glob("shard-*.parquet"))
    explain_dataset(wrapped, vcf, tmp_path / "run", shard_size=4, progress=False, fasta=str(fasta_path))
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "run").glob("shard-*.parquet")) == before
    with pytest.raises(InputError, match="other input or settings"):
        explain_dataset(
            wrapped, vcf, tmp_path / "run", shard_size=4, progress=False, fasta=str(fasta_path), motifs="none"
        )


def test_a_run_without_a_genome_or_with_a_bad_window_is_refused_before_it_starts(vcf, explainer, fasta_path, tmp_path):
    with pytest.raises(InputError, match="option fasta=GENOME.fa"):
        explain_dataset(VariantExplainer(explainer), vcf, tmp_path / "a", progress=False)
    with pytest.raises(InputError, match="no such FASTA"):
        explain_dataset(VariantExplainer(explainer), vcf, tmp_path / "b", progress=False, fasta=str(tmp_path / "x"))
    with pytest.raises(InputError, match="window="):
        explain_dataset(
            VariantExplainer(explainer), vcf, tmp_path / "c", progress=False, fasta=str(fasta_path), window=0
        )
    assert not any((tmp_path / name).exists() for name in "abc")
    with pytest.raises(InputError, match="VCF"):
        VcfRecords(fasta_path)


def test_cli_run_variants(vcf, fasta_path, tmp_path):
    from typer.testing import CliRunner

    from lrp_domains.cli import app

    done = CliRunner().invoke(
        app,
        [
            "run",
            "variants",
            str(vcf),
            "--out",
            str(tmp_path / "out"),
            "--option",
            f"fasta={fasta_path}",
            "--option",
            "motifs=none",
            "--shard-size",
            "5",
            "--no-progress",
        ],
    )
    assert done.exit_code == 0, done.output
    rows = read_results(tmp_path / "out")
    assert len(rows) == 11 and (rows["ref_motif"] == "").all() and rows["ref_motif_p"].isna().all()
    assert isinstance(rows, pd.DataFrame) and (rows["status"] == "ok").sum() == 6
