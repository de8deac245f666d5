"""Every bad input ends in one line naming the file, record, row or option and what to do; no
silent wrong row. One test per case found by trying the command line as a new user would."""

from __future__ import annotations

import csv
import gzip
import json
import warnings
from pathlib import Path

import anndata
import models as M
import numpy as np
import pandas as pd
import pytest
import text_models as T
import torch
from cli_helpers import one_line_error, run
from safetensors.torch import save_file

import lrp_domains as L
from lrp_domains.bio import SequenceExplainer, plot_logo
from lrp_domains.files import FastaRecords, TableRecords
from lrp_domains.run import explain_dataset, read_results
from lrp_domains.text import TextExplainer


def _fasta(path: Path, records: dict[str, str]) -> Path:
    path.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records.items()))
    return path


def _random_dna(n: int, seed: int = 0) -> str:
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), n))


@pytest.fixture(scope="module")
def text_explainer():
    return TextExplainer(T.encoder("bert", num_labels=2), T.wordpiece_tokenizer(), labels=["negative", "positive"])


# -- text files: records, not lines --------------------------------------------------------------
def test_csv_records_with_quoted_line_breaks_are_one_row_each(tmp_path, text_explainer):
    texts = ["first line\nsecond line of the same review", 'a "quoted", comma, review', "plain"]
    with (tmp_path / "in.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([[f"r{i}", t] for i, t in enumerate(texts)])
    manifest = explain_dataset(text_explainer, tmp_path / "in.csv", tmp_path / "out", shard_size=2, progress=False)
    rows = read_results(tmp_path / "out")
    assert list(rows.text) == texts and list(rows.id) == ["r0", "r1", "r2"]
    assert json.loads(manifest.read_text())["input"]["rows"] == 3


def test_tsv_is_read_without_quoting(tmp_path, text_explainer):
    lines = ["He said \"wow, it's great.", "a fine film", '"quoted start', "the end"]
    (tmp_path / "in.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(lines)))
    explain_dataset(text_explainer, tmp_path / "in.tsv", tmp_path / "out", progress=False)
    assert list(read_results(tmp_path / "out").text) == lines


def test_the_sentiment_workflow_reads_gold_labels_as_the_run_reads_texts(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "sentiment", Path(__file__).parents[1] / "workflows" / "text" / "sentiment_attribution.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = ["He said \"wow, it's great.", "awful", '"so bad', "lovely"]
    path = tmp_path / "reviews.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(lines)))
    gold = module._read_gold(path, "text", ["negative", "positive"])
    assert list(gold) == ["negative", "positive", "negative", "positive"]
    ids, texts = TableRecords(path).read(TableRecords(path).shards(10)[0])
    assert texts == lines and len(gold) == len(texts)
    assert module.first_records(path, 2) == "text\tlabel\n" + "".join(
        f"{t}\t{i % 2}\n" for i, t in enumerate(lines[:2])
    )


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('{"text": "fine"}\n["a", "list"]\n', "in.jsonl, line 2: a JSON list, not an object"),
        ('{"text": "fine"}\n{"text": \n', "in.jsonl, line 2: not valid JSON"),
    ],
)
def test_jsonl_problems_name_the_file_and_line(tmp_path, content, fragment, model_dir):
    (tmp_path / "in.jsonl").write_text(content)
    for command in (
        ["text", "explain-file", tmp_path / "in.jsonl", "--out", tmp_path / "o1"],
        ["run", "text", tmp_path / "in.jsonl", "--out", tmp_path / "o2"],
    ):
        one_line_error(run(*command, "--model", model_dir, "--no-progress"), fragment)


def test_latin1_and_binary_text_files_are_named(tmp_path, model_dir):
    (tmp_path / "latin.txt").write_bytes("a good film\nun film tr\xe8s beau\n".encode("latin-1"))
    (tmp_path / "binary.txt").write_bytes(b"a good film\n\x00\x01\x02\n")
    for name, fragment in (("latin.txt", "latin.txt, line 2: byte 0xe8"), ("binary.txt", "binary.txt, line 2")):
        for command in (
            ["text", "explain-file", tmp_path / name, "--out", tmp_path / f"o1-{name}"],
            ["run", "text", tmp_path / name, "--out", tmp_path / f"o2-{name}"],
        ):
            one_line_error(run(*command, "--model", model_dir, "--no-progress"), fragment)
        assert not (tmp_path / f"o2-{name}").exists()  # found while indexing, before the run folder is made


def test_truncation_names_the_input_row_and_is_recorded(tmp_path, text_explainer):
    explainer = TextExplainer(
        text_explainer.model, text_explainer.tokenizer, labels=["negative", "positive"], max_length=12
    )
    long = " ".join(["good"] * 30)
    (tmp_path / "in.txt").write_text(f"fine\nshort one\n{long}\n")
    with pytest.warns(UserWarning, match=r"row 2 \(id '2'\) has 32 tokens .* 12: truncated"):
        explain_dataset(explainer, tmp_path / "in.txt", tmp_path / "out", progress=False)
    assert list(read_results(tmp_path / "out").truncated) == [0, 0, 20]


# -- FASTA ---------------------------------------------------------------------------------------
def test_sequence_files_that_are_missing_unknown_or_upper_case(tmp_path):
    one_line_error(
        run("bio", "sequences", tmp_path / "missing.fa", "--out", tmp_path / "o", "--motifs", "none"),
        "no such FASTA file",
    )
    (tmp_path / "x.txt").write_text(">a\nACGT\n")
    one_line_error(
        run("bio", "sequences", tmp_path / "x.txt", "--out", tmp_path / "o", "--motifs", "none"),
        "x.txt: not a file type",
    )
    upper = tmp_path / "UP.FA.GZ"
    upper.write_bytes(gzip.compress(f">a\n{_random_dna(40)}\n>b\n{_random_dna(40, 1)}\n".encode()))
    result = run(
        "bio",
        "sequences",
        upper,
        "--out",
        tmp_path / "o",
        "--model",
        "models:cnn1d",
        "--motifs",
        "none",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(tmp_path / "o" / "relevance.parquet")) == 80


def test_latin1_fasta_and_records_without_bases_are_named(tmp_path):
    (tmp_path / "latin.fa").write_bytes(b">a\nACGT\n>caf\xe9\nACGT\n")
    one_line_error(
        run("bio", "sequences", tmp_path / "latin.fa", "--out", tmp_path / "o", "--motifs", "none"),
        "latin.fa, line 3: byte 0xe9",
    )
    _fasta(tmp_path / "empty.fa", {"ok": "ACGTACGT", "nothing": ""})
    one_line_error(
        run(
            "bio",
            "sequences",
            tmp_path / "empty.fa",
            "--out",
            tmp_path / "o",
            "--motifs",
            "none",
            "--model",
            "models:cnn1d",
        ),
        "record 'nothing' has a header but no bases",
    )


def test_a_record_shorter_than_the_model_takes_is_named(tmp_path):
    _fasta(tmp_path / "short.fa", {"long_enough": _random_dna(200), "tiny": "ACGTACGTAC"})
    one_line_error(
        run("bio", "sequences", tmp_path / "short.fa", "--out", tmp_path / "o", "--motifs", "none", "--no-progress"),
        "'tiny' (10 letters): the model cannot take sequences of this length",
    )


def test_duplicate_fasta_ids_are_refused(tmp_path):
    _fasta(tmp_path / "dup.fa", {"a": _random_dna(40), "b": _random_dna(40, 1)})
    with (tmp_path / "dup.fa").open("a") as handle:
        handle.write(f">a\n{_random_dna(40, 2)}\n")
    one_line_error(
        run(
            "bio",
            "sequences",
            tmp_path / "dup.fa",
            "--out",
            tmp_path / "o",
            "--motifs",
            "none",
            "--model",
            "models:cnn1d",
        ),
        "record ids occur more than once: 'a'",
    )


def test_one_long_record_is_explained_without_padding(tmp_path):
    records = {f"s{i}": _random_dna(60, i) for i in range(4)}
    records["long"] = _random_dna(3000, 9)
    _fasta(tmp_path / "mixed.fa", records)
    out = tmp_path / "o"
    result = run(
        "bio",
        "sequences",
        tmp_path / "mixed.fa",
        "--out",
        out,
        "--model",
        "models:cnn1d",
        "--motifs",
        "none",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    lines = (out / "per_position.tsv").read_text().splitlines()
    assert sorted(len(line.split("\t")) for line in lines) == [60, 60, 60, 60, 3000]
    assert np.load(out / "ohe_L60.npz")["arr_0"].shape == (4, 4, 60)
    assert np.load(out / "attr_L3000.npz")["arr_0"].shape == (1, 4, 3000)
    assert not (out / "ohe.npz").exists()
    assert len(pd.read_parquet(out / "relevance.parquet")) == 4 * 60 + 3000


# -- the observed base's relevance ---------------------------------------------------------------
# Every composite for one-hot models (the transformer composites apply to transformers only).
@pytest.mark.parametrize("name", [n for n in L.composites.names() if n not in ("attnlrp", "cp-lrp")])
def test_relevance_is_zero_off_the_one_hot_for_every_composite(name):
    M.seeded(3)
    model = M.cnn1d().double().eval()
    kwargs = {"low": 0.0, "high": 1.0} if name == "epsilon-gamma-box" else {}
    explanation = SequenceExplainer(model, composite=L.composites.get(name, **kwargs)).explain(
        [_random_dna(32, k) for k in range(3)]
    )
    off = explanation.onehot == 0
    assert not explanation.relevance[off].any()
    torch.testing.assert_close(explanation.relevance.sum(1), explanation.channel_relevance.sum(1))
    torch.testing.assert_close(explanation.relevance.sum((1, 2)).double() + explanation.delta, explanation.explained)


def test_logos_draw_one_letter_per_position():
    import matplotlib

    matplotlib.use("Agg")
    M.seeded(4)
    explanation = SequenceExplainer(M.cnn1d().eval()).explain([_random_dna(30, 5)])  # z-box: absent bases too
    assert explanation.channel_relevance[explanation.onehot == 0].abs().sum() > 0
    ax = plot_logo(explanation, 0)
    drawn = [patch for patch in ax.patches if abs(patch.get_window_extent().height) > 0.5]
    assert len(drawn) <= 30  # one glyph per position at most (absent bases have height 0)
    stacked = plot_logo(explanation, 0, hypothetical=True)
    assert len([p for p in stacked.patches if abs(p.get_window_extent().height) > 0.5]) > 30


# -- options checked before anything is explained ------------------------------------------------
@pytest.mark.parametrize(
    "motifs, fragment",
    [
        ("JASPAR2099", "no such JASPAR release"),
        ("missing.jaspar", "no such motif file"),
        ("garbage.jaspar", "garbage.jaspar"),
    ],
)
def test_bad_motif_options_fail_before_explaining(tmp_path, motifs, fragment):
    (tmp_path / "garbage.jaspar").write_text("this is not a motif file\n\x01\x02")
    out = tmp_path / "o"
    result = run(
        "bio",
        "sequences",
        _fasta(tmp_path / "in.fa", {"a": _random_dna(40)}),
        "--out",
        out,
        "--motifs",
        tmp_path / motifs if motifs.endswith("jaspar") else motifs,
    )
    one_line_error(result, fragment)
    assert not out.exists()


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "--markers: no such file"),
        ("{not json", "not valid JSON"),
        ('["MS4A1"]', "expected an object mapping each class"),
    ],
)
def test_bad_marker_files_fail_before_explaining(tmp_path, content, fragment):
    markers = tmp_path / "markers.json"
    if content is not None:
        markers.write_text(content)
    out = tmp_path / "o"
    one_line_error(run("bio", "genes", "--out", out, "--markers", markers, "--no-progress"), fragment)
    assert not out.exists()


def _expression_csv(tmp_path: Path, extra: dict | None = None, name: str = "expression.csv") -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(9, 12)), columns=M.EXPRESSION_GENES, index=[f"s{i}" for i in range(9)])
    for column, values in (extra or {}).items():
        frame[column] = values
    frame.to_csv(tmp_path / name)
    return tmp_path / name


def test_weights_problems_are_one_line_errors(tmp_path):
    data = _expression_csv(tmp_path)
    model, _, _ = M.expression_mlp()
    wrong = tmp_path / "wrong.safetensors"
    save_file({"0.weight": torch.zeros(3, 3)}, str(wrong))
    for args, fragment in [
        (["--model", "models:expression_mlp", "--weights", tmp_path / "absent.safetensors"], "no such file"),
        (["--model", "models:expression_mlp", "--weights", wrong], "do not fit the model built by"),
        (["--weights", wrong], "--weights needs --model"),
        (["--model", "models"], "MODULE:FACTORY"),
        (["--model", "no_such_module:f"], "cannot import 'no_such_module'"),
    ]:
        one_line_error(run("bio", "genes", data, "--out", tmp_path / "o", *args, "--no-progress"), fragment)


def test_a_model_module_in_the_current_folder_is_found(tmp_path, monkeypatch):
    (tmp_path / "my_local_models.py").write_text("import models\n\ndef build():\n    return models.expression_mlp()\n")
    monkeypatch.chdir(tmp_path)
    result = run(
        "bio",
        "genes",
        _expression_csv(tmp_path),
        "--out",
        tmp_path / "o",
        "--model",
        "my_local_models:build",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    shown = " ".join(run("bio", "genes", "--help").output.replace("│", " ").split())
    assert "runs its code" in shown


# -- expression tables ---------------------------------------------------------------------------
def test_a_gene_named_twice_in_the_header_is_named(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("cell," + ",".join(M.EXPRESSION_GENES) + ",G3\n" + "s0," + ",".join(["1"] * 13) + "\n")
    one_line_error(
        run("bio", "genes", path, "--out", tmp_path / "o", "--model", "models:expression_mlp"), "['G3'] more than once"
    )


def test_metadata_columns_are_ignored_and_reported(tmp_path):
    data = _expression_csv(tmp_path, {"batch": ["b1", "b2", "b3"] * 3})
    result = run("bio", "genes", data, "--out", tmp_path / "o", "--model", "models:expression_mlp", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "ignored (not genes): batch" in (tmp_path / "o" / "report.html").read_text()


def test_a_non_numeric_value_in_a_gene_column_is_named(tmp_path):
    """Metadata columns are recognised in the first rows; a gene column with a word later is an error."""
    from lrp_domains.bio.cells.readers import SCAN_ROWS, read_expression

    rows = ["cell," + ",".join(M.EXPRESSION_GENES)] + [f"s{i}," + ",".join(["1"] * 12) for i in range(SCAN_ROWS + 5)]
    rows[SCAN_ROWS + 3] = "late," + ",".join(["1"] * 5 + ["high"] + ["1"] * 6)
    (tmp_path / "expression.csv").write_text("\n".join(rows) + "\n")
    row, line = SCAN_ROWS + 2, SCAN_ROWS + 4
    with pytest.raises(ValueError, match=rf"expression.csv, row {row} \(line {line}\): column 'G5' holds 'high'"):
        read_expression(tmp_path / "expression.csv")


def test_label_column_works_for_the_bundled_model_on_a_csv(tmp_path):
    from lrp_domains.bio.cells.pbmc_mlp import load_default_data

    adata = load_default_data()[:40]
    frame = pd.DataFrame(adata.X, index=adata.obs_names, columns=adata.var_names)
    frame["cell_type"] = adata.obs["bulk_labels"].astype(str).to_numpy()
    frame.to_csv(tmp_path / "pbmc.csv")
    out = tmp_path / "o"
    result = run(
        "bio",
        "genes",
        tmp_path / "pbmc.csv",
        "--out",
        out,
        "--label-column",
        "cell_type",
        "--no-progress",
        "--top",
        "5",
    )
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(out / "top_genes.csv").group) == set(frame.cell_type)
    assert "given class (its label)" in (out / "report.html").read_text()
    one_line_error(
        run("bio", "genes", tmp_path / "pbmc.csv", "--out", out, "--label-column", "celltype"), "no column 'celltype'"
    )


def test_label_column_works_for_a_user_model_on_h5ad(tmp_path):
    rng = np.random.default_rng(1)
    adata = anndata.AnnData(
        rng.normal(size=(9, 12)).astype(np.float32),
        obs=pd.DataFrame({"kind": ["A", "B", "C"] * 3}, index=[f"c{i}" for i in range(9)]),
        var=pd.DataFrame(index=M.EXPRESSION_GENES),
    )
    adata.write_h5ad(tmp_path / "cells.h5ad")
    out = tmp_path / "o"
    result = run(
        "bio",
        "genes",
        tmp_path / "cells.h5ad",
        "--out",
        out,
        "--model",
        "models:expression_mlp",
        "--label-column",
        "kind",
        "--no-progress",
        "--top",
        "3",
    )
    assert result.exit_code == 0, result.output
    assert sorted(set(pd.read_csv(out / "top_genes.csv").group)) == ["A", "B", "C"]
    one_line_error(
        run(
            "bio",
            "genes",
            tmp_path / "cells.h5ad",
            "--out",
            out,
            "--model",
            "models:expression_mlp",
            "--label-column",
            "nope",
        ),
        "no obs column 'nope'",
    )
    plain = run(
        "bio",
        "genes",
        tmp_path / "cells.h5ad",
        "--out",
        tmp_path / "p",
        "--model",
        "models:expression_mlp",
        "--no-progress",
    )
    assert plain.exit_code == 0, plain.output
    assert "predicted class (no labels were given)" in (tmp_path / "p" / "report.html").read_text()


def test_run_genes_reads_a_csv(tmp_path):
    data = _expression_csv(tmp_path)
    result = run("run", "genes", data, "--out", tmp_path / "o", "--model", "models:expression_mlp", "--no-progress")
    assert result.exit_code == 0, result.output
    rows = read_results(tmp_path / "o")
    assert list(rows.id) == [f"s{i}" for i in range(9)]


# -- strings that are not math -------------------------------------------------------------------
def test_dollar_signs_in_names_are_plotted_as_text(tmp_path):
    _fasta(tmp_path / "money.fa", {"$x$_1": _random_dna(40), "cost$": _random_dna(40, 1)})
    result = run(
        "bio",
        "sequences",
        tmp_path / "money.fa",
        "--out",
        tmp_path / "o",
        "--model",
        "models:cnn1d",
        "--motifs",
        "none",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    (tmp_path / "money_models.py").write_text(
        "import models\n\ndef build():\n    model, genes, _ = models.expression_mlp()\n"
        "    return model, [f'${g}$' for g in genes], ['$A$', '$B', 'C$']\n"
    )
    frame = pd.DataFrame(
        np.random.default_rng(0).normal(size=(9, 12)),
        index=[f"s{i}" for i in range(9)],
        columns=[f"${g}$" for g in M.EXPRESSION_GENES],
    )
    frame["type"] = ["$A$", "$B", "C$"] * 3
    frame.to_csv(tmp_path / "money.csv")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        genes = run(
            "bio",
            "genes",
            tmp_path / "money.csv",
            "--out",
            tmp_path / "g",
            "--model",
            "money_models:build",
            "--label-column",
            "type",
            "--no-progress",
        )
    finally:
        sys.path.remove(str(tmp_path))
    assert genes.exit_code == 0, genes.output
    assert (tmp_path / "g" / "heatmap.png").stat().st_size > 0


# -- the default models are quiet ----------------------------------------------------------------
def test_the_default_models_explain_without_warnings():
    from lrp_domains.bio import ExpressionExplainer, call_seqlets
    from lrp_domains.bio.cells.pbmc_mlp import load_default_data
    from lrp_domains.data import datasets_dir

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explanation = SequenceExplainer.default().explain(datasets_dir() / "example_sequences.fa")
        call_seqlets(explanation)
        adata = load_default_data()
        genes = ExpressionExplainer.default().explain(adata, target=adata.obs["bulk_labels"].astype(str).tolist())
        genes.compare_with_de(adata, "bulk_labels")
    assert float(explanation.delta.abs().max()) > 0  # the fact the report states instead


def test_fasta_reader_counts_records_by_headers(tmp_path):
    path = _fasta(tmp_path / "a.fa", {f"r{i}": "ACGT" * (i + 1) for i in range(7)})
    reader = FastaRecords(path)
    assert [s.size for s in reader.shards(3)] == [3, 3, 1]
