"""``lrp-domains bench genome-scale`` on a CPU with ``--tiny``: the inputs are what they say (a
FASTA pyfaidx reads back, windows tiled inside the chromosome), the whole job runs through the
command line, its bigWig holds the run's relevance, and the sample's three methods are timed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lrp_domains.bench.runs import genome_scale as G
from lrp_domains.bio.sequences.genome import genome_sizes, open_fasta
from lrp_domains.run import read_results

pytest.importorskip("tangermeme")
pytest.importorskip("bpnetlite")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("genome_scale")
    return folder, G.run(device="cpu", tiny=True, folder=folder)


@pytest.mark.parametrize("length", [1, 79, 80, 81, 240, 333])
def test_the_chromosome_is_fasta_that_pyfaidx_reads_back(tmp_path, length):
    path = tmp_path / f"c{length}.fa"
    G.write_chromosome(path, length, seed=length, block=160)  # several blocks, a partial last line
    lines = path.read_text().splitlines()
    assert lines[0] == ">chr1"
    assert all(len(line) == 80 for line in lines[1:-1]) and 1 <= len(lines[-1]) <= 80
    bases = "".join(lines[1:])
    assert len(bases) == length and set(bases) <= set("ACGT")
    assert genome_sizes(path) == {"chr1": length}
    fasta, opened = open_fasta(path)
    try:
        assert str(fasta["chr1"][0:length]) == bases
    finally:
        if opened:
            fasta.close()
    with pytest.raises(ValueError, match="multiple of 80"):
        G.write_chromosome(path, 10, block=100)


def test_windows_tile_the_chromosome_within_its_ends(tmp_path):
    size = G.Size(filters=1, layers=1, windows=7, sample=1, shuffles=1, batch_size=1)
    G.write_windows(tmp_path / "w.bed", size.windows)
    rows = [line.split("\t") for line in (tmp_path / "w.bed").read_text().splitlines()]
    starts = [int(r[1]) for r in rows]
    assert len(rows) == 7 and all(r[0] == "chr1" for r in rows)
    assert np.diff(starts).tolist() == [G.STRIDE] * 6
    assert all(int(r[2]) - int(r[1]) == G.WIDTH for r in rows)
    assert starts[0] >= 0 and int(rows[-1][2]) <= size.chromosome
    # the full size is chr1's: 330,000 windows every 754 bp over about 249 Mbp
    assert abs(G.FULL.chromosome - 248_956_422) < 0.001 * 248_956_422


def test_the_job_explains_every_window_and_its_bigwig_holds_the_run(tiny_run):
    pyBigWig = pytest.importorskip("pyBigWig")
    from lrp_domains.bio.sequences.explainer import SequenceExplainer
    from lrp_domains.bio.sequences.targets import counts_target
    from lrp_domains.models import load_saved_module

    folder, result = tiny_run
    assert [step for step, _ in result["job"]] == ["run sequences", "run bigwig"]
    assert all(seconds > 0 for _, seconds in result["job"])
    rows = read_results(folder / "run")
    assert len(rows) == G.TINY.windows and set(rows["status"]) == {"ok"}
    first = rows.sort_values("row").iloc[0]
    # the run's first window, against the same window explained here from the saved model
    model = load_saved_module(folder / "chrombpnet_nobias.torch")
    fasta, opened = open_fasta(folder / "chr1.fa")
    try:
        sequence = str(fasta["chr1"][G.MARGIN : G.MARGIN + G.WIDTH])
    finally:
        if opened:
            fasta.close()
    here = SequenceExplainer(model).explain([sequence], target=counts_target()).relevance[0].sum(0)
    assert np.allclose(np.asarray(first["relevance"], dtype=np.float32), here.numpy(), rtol=1e-4, atol=1e-6)
    # bases covered by the first window alone: the bigWig holds its relevance there
    with pyBigWig.open(str(folder / "relevance.bw")) as bigwig:
        values = np.asarray(bigwig.values("chr1", G.MARGIN, G.MARGIN + G.STRIDE), dtype=np.float32)
    assert np.allclose(values, here.numpy()[: G.STRIDE], rtol=1e-4, atol=1e-6)


def test_the_sample_times_three_methods_and_prints_them(tiny_run, capsys):
    _, result = tiny_run
    per_window = result["per_window"]
    assert set(per_window) == {"ours", "gradient", "deep_lift_shap"}
    assert all(seconds > 0 for seconds in per_window.values())
    assert result["agreement"]["sample"] == G.TINY.sample
    assert -1 <= result["agreement"]["ours_vs_dls"] <= 1
    G.print_table(result)
    out = capsys.readouterr().out
    for label in (
        "run sequences (own process)",
        "run bigwig (own process)",
        "the whole job",
        "deep_lift_shap, 20 shuffles",
    ):
        assert label in out
    assert "kundajelab/chrombpnet #166" in out and "projected to 330,000 windows" in out
    # the genomics composite's MAC bound on a BPNet: z-box first layer, gamma convolutions (bench core's count)
    assert 1.0 < result["agreement"]["bound"] < 3.0
    assert f"MAC bound {result['agreement']['bound']:.2f}x" in out


def test_a_full_run_without_a_gpu_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="add --tiny"):
        G.run(device="auto")
    result = CliRunner().invoke(
        __import__("lrp_domains.cli", fromlist=["app"]).app, ["bench", "genome-scale", "--device", "cpu"]
    )
    assert result.exit_code != 0
    assert "add --tiny" in result.output


def test_job_times_are_projected_from_enough_windows_only(capsys):
    size = G.Size(filters=8, layers=2, windows=3300, sample=2, shuffles=20, batch_size=8)
    result = {
        "device": "cpu",
        "threads": 2,
        "size": size,
        "job": [("run sequences", 30.0), ("run bigwig", 3.0)],
        "per_window": {"ours": 0.5, "gradient": 0.25, "deep_lift_shap": 10.0},
        "agreement": {"bound": 2.0, "ours_vs_dls": 0.5, "gradient_vs_dls": 0.5, "sample": 2},
    }
    G.print_table(result)
    out = capsys.readouterr().out
    # 3,300 windows in 33 s: 100 windows/s, so 330,000 windows in 3,300 s
    assert "| the whole job | 3,300 | 33.0 | 100.0 | 0.92 h |" in out
    # a sample method: 0.5 s a window, 165,000 s for 330,000 windows; 2 windows timed in 1.00 s
    assert "| ours, in one process (sample) | 2 | 1.00 | 2.0 | 45.83 h |" in out
    assert "ours / gradient: 2.00x (MAC bound 2.00x: 1.00 over it); deep_lift_shap / ours: 20x" in out
    result["size"] = G.Size(filters=8, layers=2, windows=24, sample=2, shuffles=20, batch_size=8)
    G.print_table(result)
    assert "| the whole job | 24 | 33.0 | 0.7 | - |" in capsys.readouterr().out  # start-up would dominate


def test_a_folder_with_something_in_it_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="is not empty; give a new or empty folder"):
        G.run(device="cpu", tiny=True, folder=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing written
