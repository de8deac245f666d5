"""The command line: demo, composites, module entry point."""

import subprocess
import sys

from typer.testing import CliRunner

from lrp_domains.cli import app


def test_demo_prints_relevance_tables_that_find_the_planted_features():
    result = CliRunner().invoke(app, ["demo", "--core", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Share of mean |relevance|" in result.output
    # The epsilon rule puts most relevance on the three features the label depends on.
    row = next(line for line in result.output.splitlines() if "x0+x3+x5" in line)
    epsilon_share = int(row.split("│")[3].strip().rstrip("%"))
    assert epsilon_share >= 80


def test_composites_lists_the_named_composites():
    result = CliRunner().invoke(app, ["composites"])
    assert result.exit_code == 0
    for name in ("epsilon", "zplus", "alpha2beta1", "epsilon-plus", "epsilon-gamma-box"):
        assert name in result.output


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "lrp_domains", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "demo" in done.stdout and "bench" in done.stdout


def test_bench_peers_says_what_to_install_without_captum(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)
    result = CliRunner().invoke(app, ["bench", "peers"])
    assert result.exit_code == 1
    assert "pip install captum" in result.output
