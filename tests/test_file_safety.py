"""Nothing lost: run folders that are not ours are refused, only our own files are ever deleted,
reports never write through symlinks and clear only their own stale pages and logos."""

from __future__ import annotations

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


@pytest.mark.parametrize("manifest", [
    {"shards": {"0": {"file": "../victim.txt"}}, "input": {}, "settings": {}},  # no schema marker
    {"schema": "lrp-domains/run", "version": 2, "input": {}, "settings": {},
     "shards": {"0": {"file": "../victim.txt"}}},  # our marker, a path that is not ours
    {"name": "my-web-app", "version": "1.0.0"},  # someone else's manifest.json
    "not json {",
])
@pytest.mark.parametrize("resume", ["--resume", "--no-resume"])
def test_a_foreign_manifest_is_refused_and_nothing_is_deleted(tmp_path, victim, manifest, resume):
    out = tmp_path / "out"
    out.mkdir()
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (out / "manifest.json").write_text(text)
    (out / "mine.parquet").write_text("the user's")
    result = run("run", "sequences", _fasta(tmp_path / "in.fa"), "--out", out, "--model", "models:cnn1d",
                 "--composite", "epsilon", resume, "--no-progress")
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
    explain_dataset(explainer, _fasta(tmp_path / "other.fa", n=2, seed=1), out, shard_size=3, resume=False,
                    progress=False)
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
    result = run("bio", "sequences", _fasta(tmp_path / "in.fa"), "--out", out, "--model", "models:cnn1d",
                 "--motifs", "none", "--no-progress")
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
    first = run("bio", "sequences", _fasta(tmp_path / "a.fa", n=5, seed=1), "--out", out, "--model", "models:cnn1d",
                "--motifs", "none", "--no-progress")
    assert first.exit_code == 0, first.output
    assert len(list((out / "logos").glob("*.png"))) == 5
    (out / "logos" / "my-figure.png").write_bytes(b"user")
    second = run("bio", "sequences", _fasta(tmp_path / "b.fa", n=2, seed=2), "--out", out, "--model",
                 "models:cnn1d", "--motifs", "none", "--no-progress")
    assert second.exit_code == 0, second.output
    logos = sorted(p.name for p in (out / "logos").glob("*.png"))
    assert logos == ["my-figure.png", "r2_0.png", "r2_1.png"]
    assert (out / "logos" / "my-figure.png").read_bytes() == b"user"


def test_explain_file_clears_stale_pages_of_an_earlier_run(tmp_path, model_dir):
    out = tmp_path / "out"
    (tmp_path / "four.txt").write_text("a good film\na bad film\nfine\ndull\n")
    (tmp_path / "two.txt").write_text("great acting\nweak plot\n")
    assert run("text", "explain-file", tmp_path / "four.txt", "--out", out, "--model", model_dir,
               "--no-progress").exit_code == 0
    (out / "html" / "notes.html").write_text("user")
    result = run("text", "explain-file", tmp_path / "two.txt", "--out", out, "--model", model_dir, "--no-progress")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "html").glob("*.html")) == ["000000.html", "000001.html", "notes.html"]
    assert sorted(pd.read_csv(out / "texts.csv").text) == ["great acting", "weak plot"]
