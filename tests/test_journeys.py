"""A bpnet-lite user's whole job, from the command line only: a BPNet saved with ``torch.save``, a
narrowPeak file and a genome FASTA in; a run, a bigWig of relevance, a seqlet BED in genome
coordinates and the tfmodisco-lite inputs out. Compared with the Python API on the same windows.

(The other journeys: scvi-tools ``model.save`` folders in tests/test_scvi_folders.py; Enformer
``save_model`` weights, Nucleotide Transformer's slow tokenizer and RoBERTa's positions in
tests/test_saved_models.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_genomics_architectures import tiny_bpnet
from typer.testing import CliRunner

from lrp_domains.bio import SequenceExplainer, counts_target
from lrp_domains.cli import app
from lrp_domains.run import read_manifest, read_results

pyBigWig = pytest.importorskip("pyBigWig")

WIDTH = 160
COMPLEMENT = str.maketrans("ACGT", "TGCA")


def reverse_complement_text(sequence: str) -> str:
    return sequence.translate(COMPLEMENT)[::-1]


def run(*args: object):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _genome(path: Path) -> dict[str, str]:
    rng = np.random.default_rng(7)
    chroms = {"chr1": "".join(rng.choice(list("ACGT"), 1500)), "chr2": "".join(rng.choice(list("ACGT"), 900))}
    path.write_text(
        "".join(
            f">{name}\n" + "\n".join(seq[i : i + 70] for i in range(0, len(seq), 70)) + "\n"
            for name, seq in chroms.items()
        )
    )
    return chroms


def test_the_bpnet_lite_job_from_the_command_line(tmp_path):
    chroms = _genome(tmp_path / "genome.fa")
    # narrowPeak: chrom start end name score strand signal p q summit (summit offset from start)
    peaks = [
        ("chr1", 200, 500, "+", 120),
        ("chr1", 330, 630, "-", 100),
        ("chr2", 400, 700, ".", -1),
        ("chr2", 800, 890, "+", 40),
    ]  # the last window runs off chr2's end
    lines = [
        f"{c}\t{s}\t{e}\tpeak{i}\t0\t{strand}\t1\t1\t1\t{summit}\n" for i, (c, s, e, strand, summit) in enumerate(peaks)
    ]
    (tmp_path / "peaks.narrowPeak").write_text("".join(lines))
    model = tiny_bpnet()
    torch.save(model, tmp_path / "bpnet.torch")

    run(
        "run",
        "sequences",
        "--regions",
        tmp_path / "peaks.narrowPeak",
        "--genome",
        tmp_path / "genome.fa",
        "--width",
        WIDTH,
        "--model",
        tmp_path / "bpnet.torch",
        "--target",
        "counts",
        "--out",
        tmp_path / "run",
        "--no-progress",
    )
    run("run", "bigwig", tmp_path / "run", "--out", tmp_path / "relevance.bw")
    run("run", "seqlets", tmp_path / "run", "--out", tmp_path / "seqlets.bed", "--motifs", "none")
    run("run", "export-modisco", tmp_path / "run")

    rows = read_results(tmp_path / "run")
    expected_ids = ["chr1:240-400(+)", "chr1:350-510(-)", "chr2:470-630(+)", "chr2:760-920(+)"]
    assert list(rows.id) == expected_ids
    assert list(rows.status) == ["ok", "ok", "ok", "off_chromosome"]

    # the Python API on the same windows, cut from the genome here
    windows = [("chr1", 240, 400, "+"), ("chr1", 350, 510, "-"), ("chr2", 470, 630, ".")]
    sequences = [
        chroms[c][s:e] if strand != "-" else reverse_complement_text(chroms[c][s:e]) for c, s, e, strand in windows
    ]
    direct = SequenceExplainer(tiny_bpnet()).explain(sequences, target=counts_target())
    for k in range(3):
        np.testing.assert_allclose(rows.relevance[k], direct.per_position[k].numpy(), rtol=1e-4, atol=1e-6)

    # the bigWig: each window's relevance at its genome positions (minus strand reversed), overlaps averaged
    sums = {c: np.zeros(len(seq)) for c, seq in chroms.items()}
    counts = {c: np.zeros(len(seq)) for c, seq in chroms.items()}
    for k, (c, s, e, strand) in enumerate(windows):
        values = direct.per_position[k].double().numpy()
        sums[c][s:e] += values[::-1] if strand == "-" else values
        counts[c][s:e] += 1
    with pyBigWig.open(str(tmp_path / "relevance.bw")) as track:
        assert track.chroms() == {c: len(seq) for c, seq in chroms.items()}
        for c in chroms:
            covered = counts[c] > 0
            got = np.nan_to_num(np.asarray(track.values(c, 0, len(chroms[c])), dtype=float))
            np.testing.assert_allclose(got[covered], sums[c][covered] / counts[c][covered], rtol=1e-4, atol=1e-6)
            assert not got[~covered].any()

    # the seqlets: BED6 in genome coordinates, inside their windows and chromosomes
    lines = [
        line.split("\t")
        for line in (tmp_path / "seqlets.bed").read_text().splitlines()
        if not line.startswith(("#", "track"))
    ]
    for chrom, start, end, _, _, _ in lines:
        assert chrom in chroms and 0 <= int(start) < int(end) <= len(chroms[chrom])
        assert any(c == chrom and s <= int(start) and int(end) <= e for c, s, e, _ in windows)

    # tfmodisco-lite inputs: the usable windows' one-hot and hypothetical contributions
    ohe, attr = np.load(tmp_path / "run" / "ohe.npy"), np.load(tmp_path / "run" / "attr.npy")
    assert ohe.shape == attr.shape == (3, 4, WIDTH)
    np.testing.assert_allclose(attr, direct.hypothetical.numpy(), rtol=1e-4, atol=1e-6)
    assert read_manifest(tmp_path / "run")["outputs"] == ["attr.npy", "ohe.npy"]  # listed as the run's
