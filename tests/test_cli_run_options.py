"""Run command options: --address, a Ray run that lost its workers, the OpenMP wait policy."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from lrp_domains.cli import app


def test_address_needs_the_ray_engine(tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nACGTACGTACGTACGTACGT\n")
    done = CliRunner().invoke(app, ["run", "sequences", str(fasta), "--out", str(tmp_path / "out"),
                                    "--address", "auto", "--no-progress"])
    assert done.exit_code == 2 and "error: --address is for --engine ray" in done.output
    assert not (tmp_path / "out").exists()


def test_lost_ray_workers_end_in_one_line(tmp_path, monkeypatch):
    from lrp_domains.run import ray_engine

    def lost(*args, **kwargs):
        raise ray_engine.RayWorkersLost("the Ray cluster has no node left for a worker. Finished shards are kept: "
                                        "run the same command again with --resume")

    monkeypatch.setattr("lrp_domains.run.explain_dataset", lost)
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nACGTACGTACGTACGTACGT\n")
    done = CliRunner().invoke(app, ["run", "sequences", str(fasta), "--out", str(tmp_path / "out"), "--engine", "ray",
                                    "--address", "127.0.0.1:1", "--no-progress"])
    assert done.exit_code == 1
    assert done.output.strip().splitlines()[-1].startswith("error: the Ray cluster has no node left")
    assert "Traceback" not in done.output


def test_the_command_line_lets_idle_threads_sleep_unless_told_otherwise():
    code = "import os, lrp_domains.cli; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "ACTIVE"
