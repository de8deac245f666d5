"""``lrp-domains bio genes`` with a user model from MODULE:FACTORY and safetensors weights."""

import json

import models as M
import numpy as np
import pandas as pd
from safetensors.torch import save_file
from typer.testing import CliRunner

from lrp_domains.cli import app


def _data(tmp_path, labels=True):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(30, 12)), columns=M.EXPRESSION_GENES, index=[f"s{i}" for i in range(30)])
    if labels:
        frame["cell_type"] = ["A", "B", "C"] * 10
    path = tmp_path / "expression.csv"
    frame.to_csv(path)
    return path


def test_user_model_csv_labels_and_markers(tmp_path):
    model, _, _ = M.expression_mlp()
    weights = tmp_path / "mlp.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    markers = tmp_path / "markers.json"
    markers.write_text(json.dumps({"A": ["G1", "G2"], "B": ["G3"]}))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "bio",
            "genes",
            str(_data(tmp_path)),
            "--out",
            str(out),
            "--model",
            "models:expression_mlp",
            "--weights",
            str(weights),
            "--label-column",
            "cell_type",
            "--markers",
            str(markers),
            "--no-progress",
            "--top",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    relevance = pd.read_parquet(out / "relevance.parquet")
    assert relevance.shape == (30, 12) and list(relevance.columns) == M.EXPRESSION_GENES
    top = pd.read_csv(out / "top_genes.csv")
    assert set(top.group) == {"A", "B", "C"} and top.groupby("group").size().max() == 5
    assert set(pd.read_csv(out / "markers.csv")["class"]) == {"A", "B"}
    assert (out / "report.html").exists() and (out / "heatmap.png").exists()


def test_pickled_weights_are_refused(tmp_path):
    bad = tmp_path / "mlp.pt"
    bad.write_bytes(b"not read")
    result = CliRunner().invoke(
        app,
        [
            "bio",
            "genes",
            str(_data(tmp_path)),
            "--out",
            str(tmp_path / "o"),
            "--model",
            "models:expression_mlp",
            "--weights",
            str(bad),
        ],
    )
    assert result.exit_code != 0 and "safetensors" in result.output


def test_missing_genes_are_a_clear_error(tmp_path):
    path = _data(tmp_path, labels=False)
    frame = pd.read_csv(path, index_col=0).drop(columns=["G4"])
    frame.to_csv(path)
    result = CliRunner().invoke(
        app,
        ["bio", "genes", str(path), "--out", str(tmp_path / "o"), "--model", "models:expression_mlp", "--no-progress"],
    )
    assert result.exit_code == 2
    assert "1 of the model's 12 genes are not in the data: G4" in result.output and "--missing zero" in result.output
    filled = CliRunner().invoke(
        app,
        [
            "bio",
            "genes",
            str(path),
            "--out",
            str(tmp_path / "o"),
            "--model",
            "models:expression_mlp",
            "--no-progress",
            "--missing",
            "zero",
        ],
    )
    assert filled.exit_code == 0, filled.output
    relevance = pd.read_parquet(tmp_path / "o" / "relevance.parquet")
    assert (relevance["G4"] == 0).all() and (relevance.drop(columns="G4").abs().sum(axis=1) > 0).all()


def test_sequences_command_with_a_user_model(tmp_path):
    rng = np.random.default_rng(0)
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">seq{i}\n{''.join(rng.choice(list('ACGT'), 64))}\n" for i in range(5)))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "bio",
            "sequences",
            str(fasta),
            "--out",
            str(out),
            "--model",
            "models:cnn1d",
            "--target",
            "1",
            "--motifs",
            "none",
            "--no-progress",
            "--rc-average",
        ],
    )
    assert result.exit_code == 0, result.output
    assert np.load(out / "attr.npz")["arr_0"].shape == (5, 4, 64)
    table = pd.read_parquet(out / "relevance.parquet")
    assert len(table) == 5 * 64 and set(table.id) == {f"seq{i}" for i in range(5)}
    assert (out / "report.html").exists() and len(list((out / "logos").glob("*.png"))) == 5
    assert (out / "seqlets.bed").exists()


def test_sequences_command_names_a_bad_base(tmp_path):
    fasta = tmp_path / "bad.fa"
    fasta.write_text(">ok\nACGTACGT\n>broken\nACGRACGT\n")
    result = CliRunner().invoke(
        app,
        [
            "bio",
            "sequences",
            str(fasta),
            "--out",
            str(tmp_path / "o"),
            "--model",
            "models:cnn1d",
            "--motifs",
            "none",
            "--no-progress",
        ],
    )
    assert result.exit_code == 2
    assert "broken: 'R' at position 4 is an IUPAC ambiguity code" in result.output


def test_genes_command_with_the_default_model_and_data(tmp_path):
    out = tmp_path / "genes"
    result = CliRunner().invoke(app, ["bio", "genes", "--out", str(out), "--no-progress", "--top", "20"])
    assert result.exit_code == 0, result.output
    markers = pd.read_csv(out / "markers.csv")
    b_cells = markers[(markers["class"] == "CD19+ B") & (markers.k == 20)].iloc[0]
    assert b_cells.recall >= 0.75  # MS4A1, CD79A, CD79B, BANK1: the B-cell markers are found
    de = pd.read_csv(out / "de_overlap.csv")
    assert len(de) == 10 and (de.overlap > 0).all()
    assert "noisy" in (out / "report.html").read_text()


def test_sequences_command_with_the_default_model_and_examples(tmp_path):
    out = tmp_path / "sequences"
    result = CliRunner().invoke(app, ["bio", "sequences", "--out", str(out), "--motifs", "none", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert np.load(out / "ohe.npz")["arr_0"].shape[1:] == (4, 200)
    seqlets = pd.read_csv(out / "seqlets.csv")
    assert len(seqlets) > 0 and seqlets.id.str.startswith("synth_pos").mean() > 0.8
