"""Run command options: --address, a Ray run that lost its workers, the OpenMP wait policy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lrp_domains.cli import app


def test_address_needs_the_ray_engine(tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nACGTACGTACGTACGTACGT\n")
    done = CliRunner().invoke(
        app, ["run", "sequences", str(fasta), "--out", str(tmp_path / "out"), "--address", "auto", "--no-progress"]
    )
    assert done.exit_code == 2 and "error: --address is for --engine ray" in done.output
    assert not (tmp_path / "out").exists()


def test_lost_ray_workers_end_in_one_line(tmp_path, monkeypatch):
    from lrp_domains.run import ray_engine

    def lost(*args, **kwargs):
        raise ray_engine.RayWorkersLost(
            "the Ray cluster has no node left for a worker. Finished shards are kept: "
            "run the same command again with --resume"
        )

    monkeypatch.setattr("lrp_domains.run.explain_dataset", lost)
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nACGTACGTACGTACGTACGT\n")
    done = CliRunner().invoke(
        app,
        [
            "run",
            "sequences",
            str(fasta),
            "--out",
            str(tmp_path / "out"),
            "--engine",
            "ray",
            "--address",
            "127.0.0.1:1",
            "--no-progress",
        ],
    )
    assert done.exit_code == 1
    assert done.output.strip().splitlines()[-1].startswith("error: the Ray cluster has no node left")
    assert "Traceback" not in done.output


def test_the_command_line_lets_idle_threads_sleep_unless_told_otherwise():
    code = "import os, lrp_domains.cli; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
        == "PASSIVE"
    )
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
        == "ACTIVE"
    )


# -- options mean what they say, and are checked before anything is written -------------------------
def _fasta(path):
    from lrp_domains.bench.data.synthetic import make_dataset, write_fasta

    return write_fasta(path, make_dataset(4, seed=1))


def _run(*args):
    return CliRunner().invoke(app, ["run", *map(str, args), "--no-progress"])


def test_boolean_options_read_yes_no_on_off_and_refuse_anything_else(tmp_path):
    from lrp_domains.run import read_manifest

    fasta = _fasta(tmp_path / "in.fa")
    for value, expected in (("no", False), ("off", False), ("0", False), ("Yes", True), ("on", True), ("1", True)):
        out = tmp_path / f"out-{value}"
        done = _run("sequences", fasta, "--out", out, "--option", f"center={value}", "--option", f"rc_average={value}")
        assert done.exit_code == 0, done.output
        options = read_manifest(out)["settings"]["options"]
        assert options["center"] is expected and options["rc_average"] is expected
    refused = _run("sequences", fasta, "--out", tmp_path / "bad", "--option", "center=maybe")
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "option center='maybe': give true/false (also yes/no, on/off, 1/0)" in refused.output
    assert not (tmp_path / "bad").exists()


def test_center_no_explains_like_no_centering(tmp_path):
    from lrp_domains.run import read_results

    fasta = _fasta(tmp_path / "in.fa")
    assert _run("sequences", fasta, "--out", tmp_path / "a").exit_code == 0
    assert _run("sequences", fasta, "--out", tmp_path / "b", "--option", "center=no").exit_code == 0
    a, b = read_results(tmp_path / "a"), read_results(tmp_path / "b")
    assert [list(x) for x in a.relevance] == [list(x) for x in b.relevance]


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("abc", "option batch_size='abc': give an integer >= 1"),
        ("0", "option batch_size='0': give an integer >= 1"),
        ("-4", "option batch_size='-4': give an integer >= 1"),
        ("2.5", "option batch_size='2.5': give an integer >= 1"),
    ],
)
def test_bad_batch_sizes_are_refused_before_the_folder_exists(tmp_path, value, fragment):
    done = _run("sequences", _fasta(tmp_path / "in.fa"), "--out", tmp_path / "out", "--option", f"batch_size={value}")
    assert done.exit_code == 2 and "Traceback" not in done.output and fragment in done.output, done.output
    assert not (tmp_path / "out").exists()


def test_choices_name_the_accepted_values(tmp_path):
    done = _run("genes", tmp_path / "in.h5ad", "--out", tmp_path / "out", "--missing", "fill")
    assert done.exit_code == 2 and "option missing='fill': give error or zero" in done.output, done.output


def test_a_target_the_model_does_not_have_is_refused_before_the_folder_exists(tmp_path):
    fasta = _fasta(tmp_path / "in.fa")
    done = _run("sequences", fasta, "--out", tmp_path / "out", "--target", "7")
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    assert "in.fa, row 0" in done.output and "7" in done.output and "Nothing was written" in done.output
    assert not (tmp_path / "out").exists()
