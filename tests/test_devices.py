"""``--device`` of ``lrp-domains run``: auto takes the GPU torch sees, else the CPU; a GPU the
machine lacks, or a name torch does not know, is refused before the model loads or the folder is
touched; the device is not part of a run's identity (a run resumes on another one)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from lrp_domains.bench.data.synthetic import make_dataset, write_fasta
from lrp_domains.cli import app
from lrp_domains.domains import build_explainer
from lrp_domains.errors import InputError
from lrp_domains.run import read_results
from lrp_domains.run.devices import resolve_device


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without a CUDA GPU, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_auto_takes_the_gpu_torch_sees_else_the_cpu(monkeypatch):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_a_gpu_this_machine_lacks_is_refused_with_what_to_give(no_gpu):
    for name in ("cuda", "cuda:0"):
        with pytest.raises(InputError, match=r"torch sees no CUDA GPU .*use --device cpu"):
            resolve_device(name)


def test_a_gpu_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(InputError, match=r"has 2 CUDA GPU\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["gpu", "mps", "meta", "cuda:x", ""])
def test_unknown_names_are_refused(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if name == "":  # empty is auto (typer never gives it; Python callers may)
        assert resolve_device(name) == torch.device("cpu")
        return
    with pytest.raises(InputError, match=r"--device must be auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_build_explainer_puts_the_model_on_the_device():
    explainer = build_explainer("sequences", device="cpu")
    assert {p.device.type for p in explainer.model.parameters()} == {"cpu"}
    with pytest.raises(InputError, match="--device must be"):
        build_explainer("sequences", device="tpu")


def test_run_on_cpu_says_where_and_a_missing_gpu_touches_nothing(tmp_path, no_gpu):
    path = write_fasta(tmp_path / "in.fa", make_dataset(6, seed=2))
    out = tmp_path / "out"
    refused = CliRunner().invoke(
        app, ["run", "sequences", str(path), "--out", str(out), "--device", "cuda", "--no-progress"]
    )
    assert refused.exit_code != 0
    assert "error: --device cuda: torch sees no CUDA GPU" in refused.output
    assert not out.exists()  # refused before the folder was made
    done = CliRunner().invoke(
        app, ["run", "sequences", str(path), "--out", str(out), "--device", "cpu", "--no-progress", "--shard-size", "4"]
    )
    assert done.exit_code == 0, done.output
    assert "6 rows in 2 shards on cpu" in done.output
    first = read_results(out)
    written = {f.name: f.stat().st_mtime_ns for f in out.glob("*.parquet")}
    assert len(written) == 2
    # the device is not part of the run's identity: the same run, resumed with auto, has nothing left to do
    again = CliRunner().invoke(
        app, ["run", "sequences", str(path), "--out", str(out), "--no-progress", "--shard-size", "4"]
    )
    assert again.exit_code == 0, again.output
    assert "6 rows in 2 shards on cpu" in again.output
    assert read_results(out).equals(first)
    assert {f.name: f.stat().st_mtime_ns for f in out.glob("*.parquet")} == written  # no shard written again
