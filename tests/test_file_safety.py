"""Nothing lost: run folders that are not ours are refused, only our own files are ever deleted,
reports never write through symlinks and clear only their own stale pages and logos."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lrp_domains.cli import app
from lrp_domains.errors import InputError
from lrp_domains.files.writing import OutputFolder
from lrp_domains.run import explain_dataset, export_modisco, read_results


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _fasta(path: Path, n: int = 6, length: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text("".join(f">r{seed}_{i}\n{''.join(rng.choice(list('ACGT'), length))}\n" for i in range(n)))
    return path


@pytest.fixture
def victim(tmp_path):
    """A file outside the output folder that a foreign manifest points at."""
    path = tmp_path / "victim.txt"
    path.write_text("precious")
    return path


@pytest.mark.parametrize(
    "manifest",
    [
        {"shards": {"0": {"file": "../victim.txt"}}, "input": {}, "settings": {}},  # no schema marker
        {
            "schema": "lrp-domains/run",
            "version": 3,
            "input": {},
            "settings": {},
            "shards": {"0": {"file": "../victim.txt"}},
        },  # our marker, a path that is not ours
        {"name": "my-web-app", "version": "1.0.0"},  # someone else's manifest.json
        "not json {",
    ],
)
@pytest.mark.parametrize("resume", ["--resume", "--no-resume"])
def test_a_foreign_manifest_is_refused_and_nothing_is_deleted(tmp_path, victim, manifest, resume):
    out = tmp_path / "out"
    out.mkdir()
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (out / "manifest.json").write_text(text)
    (out / "mine.parquet").write_text("the user's")
    result = run(
        "run",
        "sequences",
        _fasta(tmp_path / "in.fa"),
        "--out",
        out,
        "--model",
        "models:cnn1d",
        "--composite",
        "epsilon",
        resume,
        "--no-progress",
    )
    assert result.exit_code == 2, result.output
    assert "manifest.json" in result.output and ("another --out" in result.output or "another folder" in result.output)
    assert "Traceback" not in result.output
    assert victim.read_text() == "precious"
    assert (out / "manifest.json").read_text() == text and (out / "mine.parquet").read_text() == "the user's"


def test_reading_a_foreign_manifest_is_an_error_not_a_crash(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"name": "web"}))
    for call in (lambda: read_results(out), lambda: export_modisco(out)):
        with pytest.raises(InputError, match="no lrp-domains schema marker"):
            call()
    result = run("run", "export-modisco", out)
    assert result.exit_code == 2 and "schema marker" in result.output and "KeyError" not in result.output


def test_no_resume_deletes_only_our_shards(tmp_path):
    from lrp_domains.bio import SequenceExplainer

    explainer = SequenceExplainer(T_cnn(), composite="epsilon")
    path = _fasta(tmp_path / "in.fa", n=8)
    out = tmp_path / "out"
    explain_dataset(explainer, path, out, shard_size=3, progress=False)
    (out / "shard-notes.txt").write_text("user")
    (out / "results.parquet").write_text("user")
    explain_dataset(
        explainer, _fasta(tmp_path / "other.fa", n=2, seed=1), out, shard_size=3, resume=False, progress=False
    )
    assert sorted(p.name for p in out.glob("shard-*.parquet")) == ["shard-00000.parquet"]
    assert (out / "shard-notes.txt").read_text() == "user" and (out / "results.parquet").read_text() == "user"


def T_cnn():
    import models as M

    M.seeded(0)
    return M.cnn1d().eval()


def test_report_writers_replace_a_symlink_not_its_target(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "elsewhere.html"
    target.write_text("keep me")
    (out / "report.html").symlink_to(target)
    args = (
        "bio",
        "sequences",
        _fasta(tmp_path / "in.fa"),
        "--out",
        out,
        "--model",
        "models:cnn1d",
        "--motifs",
        "none",
        "--no-progress",
    )
    refused = run(*args)  # a report.html we did not write (here a symlink): refused, nothing replaced
    assert refused.exit_code == 2 and "report.html, which lrp-domains did not write" in refused.output
    assert (out / "report.html").is_symlink() and target.read_text() == "keep me"
    (out / "report.html").unlink()
    assert run(*args).exit_code == 0
    (out / "report.html").unlink()
    (out / "report.html").symlink_to(target)  # our listed report.html, replaced by a symlink
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert target.read_text() == "keep me"
    assert not (out / "report.html").is_symlink() and "<html" in (out / "report.html").read_text()


def test_a_symlinked_subfolder_is_not_written_through(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "logos").symlink_to(elsewhere)
    folder = OutputFolder(out, "test")
    with pytest.raises(InputError, match="is a symlink"):
        folder.write_text("logos/a.png", "x")
    assert not list(elsewhere.iterdir())


def test_sequence_reports_clear_their_own_stale_logos_only(tmp_path):
    out = tmp_path / "out"
    first = run(
        "bio",
        "sequences",
        _fasta(tmp_path / "a.fa", n=5, seed=1),
        "--out",
        out,
        "--model",
        "models:cnn1d",
        "--motifs",
        "none",
        "--no-progress",
    )
    assert first.exit_code == 0, first.output
    assert len(list((out / "logos").glob("*.png"))) == 5
    (out / "logos" / "my-figure.png").write_bytes(b"user")
    second = run(
        "bio",
        "sequences",
        _fasta(tmp_path / "b.fa", n=2, seed=2),
        "--out",
        out,
        "--model",
        "models:cnn1d",
        "--motifs",
        "none",
        "--no-progress",
    )
    assert second.exit_code == 0, second.output
    logos = sorted(p.name for p in (out / "logos").glob("*.png"))
    assert logos == ["my-figure.png", "r2_0.png", "r2_1.png"]
    assert (out / "logos" / "my-figure.png").read_bytes() == b"user"


def test_explain_file_clears_stale_pages_of_an_earlier_run(tmp_path, model_dir):
    out = tmp_path / "out"
    (tmp_path / "four.txt").write_text("a good film\na bad film\nfine\ndull\n")
    (tmp_path / "two.txt").write_text("great acting\nweak plot\n")
    assert (
        run(
            "text", "explain-file", tmp_path / "four.txt", "--out", out, "--model", model_dir, "--no-progress"
        ).exit_code
        == 0
    )
    (out / "html" / "notes.html").write_text("user")
    result = run("text", "explain-file", tmp_path / "two.txt", "--out", out, "--model", model_dir, "--no-progress")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "html").glob("*.html")) == ["000000.html", "000001.html", "notes.html"]
    assert sorted(pd.read_csv(out / "texts.csv").text) == ["great acting", "weak plot"]


# -- found by the Hypothesis battery (tests/test_readers_fuzz.py): each was another exception type --
def test_a_damaged_gzip_file_is_named(tmp_path):
    from lrp_domains.files import FastaRecords, TableRecords

    data = gzip.compress(b"text\n" + b"hello\n" * 100)
    (tmp_path / "t.txt.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "m.fa").write_bytes(b"\x1f\x8b")
    (tmp_path / "c.tsv.gz").write_bytes(data[:-8] + b"\0" * 4 + data[-4:])
    for reader in (
        lambda: TableRecords(tmp_path / "t.txt.gz").shards(1),
        lambda: FastaRecords(tmp_path / "m.fa").shards(1),
        lambda: TableRecords(tmp_path / "c.tsv.gz").shards(1),
    ):
        with pytest.raises(InputError, match="a damaged gzip file"):
            reader()


def test_damaged_parquet_pages_and_unusual_values(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lrp_domains.files import TableRecords

    pq.write_table(pa.table({"text": ["a" * 100]}), tmp_path / "p.parquet", compression="none")
    damaged = bytearray((tmp_path / "p.parquet").read_bytes())
    damaged[4:40] = b"\xab" * 36
    (tmp_path / "p.parquet").write_bytes(bytes(damaged))
    reader = TableRecords(tmp_path / "p.parquet")
    with pytest.raises(InputError, match="p.parquet, rows 0 to 0: damaged Parquet data"):
        reader.read(reader.shards(1)[0])
    pq.write_table(pa.table({"text": pa.array([[b"x"]], pa.list_(pa.binary()))}), tmp_path / "b.parquet")
    reader = TableRecords(tmp_path / "b.parquet")
    assert reader.read(reader.shards(1)[0])[1] == ["[b'x']"]


@pytest.mark.parametrize(
    "content",
    [
        '{"schema":"lrp-domains/run","version":3,"input":{},"settings":{},"shards":{"\u00b2":{"file":"shard-00002.parquet"}}}',
        '{"schema":"lrp-domains/run","version":3,"input":{},"settings":{},"shards":{"' + "1" * 5000 + '":{}}}',
        "[" * 1000 + "]" * 1000,
    ],
)
def test_odd_manifests_are_refused_by_name(tmp_path, content):
    from lrp_domains.run import read_manifest

    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(InputError, match="manifest.json"):
        read_manifest(tmp_path)


def test_deeply_nested_json_lines_and_markers(tmp_path):
    from lrp_domains.files import TableRecords

    (tmp_path / "in.jsonl").write_text('{"text": "ok"}\n' + "[" * 1000 + "]" * 1000 + "\n")
    reader = TableRecords(tmp_path / "in.jsonl")
    with pytest.raises(InputError, match="in.jsonl, line 2: not valid JSON"):
        reader.read(reader.shards(5)[0])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "lrp-domains.json").write_text("[" * 1000 + "]" * 1000)
    with pytest.raises(InputError, match="lrp-domains.json is not an lrp-domains report list"):
        OutputFolder(tmp_path / "out", "test")  # an unreadable marker is not ours: refused, never replaced


def test_finish_never_deletes_through_a_symlinked_folder(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path)
    (out / "lrp-domains.json").write_text(json.dumps({"schema": "lrp-domains/outputs", "files": ["link/victim.txt"]}))
    OutputFolder(out, "test").finish()
    assert victim.read_text() == "precious"


def test_a_folder_named_like_a_shard_is_refused(tmp_path):
    from lrp_domains.bio import SequenceExplainer

    out = tmp_path / "out"
    (out / "shard-00000.parquet").mkdir(parents=True)
    with pytest.raises(InputError, match="folders named like our shards"):
        explain_dataset(
            SequenceExplainer(T_cnn(), composite="epsilon"), _fasta(tmp_path / "in.fa"), out, progress=False
        )


def test_whitespace_rows_are_rows_and_any_column_name_is_a_name(tmp_path):
    from lrp_domains.files import TableRecords

    (tmp_path / "a.csv").write_text("text\n \nb\n")
    reader = TableRecords(tmp_path / "a.csv")
    assert reader.read(reader.shards(5)[0])[1] == [" ", "b"]  # an empty text is an error later, not a lost row
    (tmp_path / "b.csv").write_text("text,__fields__\nhello,1\n")
    reader = TableRecords(tmp_path / "b.csv")
    assert reader.read(reader.shards(5)[0])[1] == ["hello"]


def test_a_damaged_h5ad_file_is_named(tmp_path):
    import anndata

    from lrp_domains.bio.cells.readers import H5adCells, read_expression

    data = anndata.AnnData(
        np.arange(24, dtype=np.float32).reshape(6, 4),
        obs=pd.DataFrame({"label": list("abcabc")}, index=[f"c{i}" for i in range(6)]),
        var=pd.DataFrame(index=[f"G{i}" for i in range(4)]),
    )
    data.write_h5ad(tmp_path / "ok.h5ad")
    whole = (tmp_path / "ok.h5ad").read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(whole[: len(whole) // 3])
    for call in (lambda: H5adCells(tmp_path / "cut.h5ad"), lambda: read_expression(tmp_path / "cut.h5ad", "label")):
        with pytest.raises(InputError, match="cut.h5ad: .* failed, the .h5ad file is damaged"):
            call()
