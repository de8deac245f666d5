"""``lrp-domains text explain`` and ``explain-file`` on a tiny saved classifier (offline)."""

import json

import pandas as pd
import pytest
import text_models as T
from typer.testing import CliRunner

from lrp_domains.cli import app


def run(*args):
    return CliRunner().invoke(app, list(args))


def test_explain_in_the_terminal(model_dir):
    result = run("text", "explain", "A great, moving film!", "--model", model_dir, "--target", "positive")
    assert result.exit_code == 0, result.output
    assert "prediction:" in result.output and "most relevant:" in result.output and "moving" in result.output


@pytest.mark.parametrize("fmt", ["html", "csv", "json"])
def test_explain_formats_to_a_file(model_dir, tmp_path, fmt):
    out = tmp_path / f"result.{fmt}"
    result = run(
        "text",
        "explain",
        "A dull <b>film</b>.",
        "--model",
        model_dir,
        "--format",
        fmt,
        "--out",
        str(out),
        "--composite",
        "cp-lrp",
        "--level",
        "token",
    )
    assert result.exit_code == 0, result.output
    content = out.read_text()
    if fmt == "html":
        assert content.startswith("<!DOCTYPE html>") and "<b>film" not in content and "http" not in content
    elif fmt == "csv":
        frame = pd.read_csv(out)
        assert "relevance" in frame.columns and frame.token.iloc[0] == "[CLS]"
    else:
        assert json.loads(content)["composite"] == "cp-lrp"


def test_unknown_label_is_a_clear_error(model_dir):
    result = run("text", "explain", "A film", "--model", model_dir, "--target", "neutral")
    assert result.exit_code != 0
    assert "unknown label" in result.output


def test_explain_file_writes_tables_pages_and_summary(model_dir, tmp_path):
    source = tmp_path / "reviews.tsv"
    pd.DataFrame({"review": T.SENTENCES, "id": range(len(T.SENTENCES))}).to_csv(source, sep="\t", index=False)
    out = tmp_path / "out"
    result = run(
        "text",
        "explain-file",
        str(source),
        "--column",
        "review",
        "--out",
        str(out),
        "--model",
        model_dir,
        "--batch-size",
        "4",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    tokens = pd.read_parquet(out / "tokens.parquet")
    assert sorted(tokens.text_index.unique()) == list(range(len(T.SENTENCES)))
    assert len(pd.read_csv(out / "tokens.csv")) == len(tokens)
    assert len(list((out / "html").glob("*.html"))) == len(T.SENTENCES)
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.columns) == {"predicted_class", "rank", "word", "mean_relevance", "count"}
    assert set(summary.predicted_class) <= {"negative", "positive"}
    assert (summary.groupby("predicted_class")["mean_relevance"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_explain_file_keeps_rows_written_before_a_bad_one(model_dir, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("good film\nbad film\nfine film\nnice film\n", encoding="utf-8")
    lines = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["good film", "bad film", "", "nice film"]}).to_csv(lines, index=False)
    out = tmp_path / "out"
    result = run(
        "text",
        "explain-file",
        str(lines),
        "--out",
        str(out),
        "--model",
        model_dir,
        "--batch-size",
        "2",
        "--shard-size",
        "2",
        "--no-progress",
    )
    assert result.exit_code == 2
    assert "texts.csv, shard 1" in result.output and "row 2 (id '2') is an empty text" in result.output
    assert "Finished shards are kept" in result.output
    from lrp_domains.run import read_results

    kept = read_results(out / "run")  # the rows before it are in the run, which resumes once the row is fixed
    assert list(kept.row) == [0, 1] and list(kept.text) == ["good film", "bad film"]
    assert not (out / "tokens.csv").exists()  # tables are made from a complete run only


def test_explain_file_missing_column(model_dir, tmp_path):
    source = tmp_path / "x.csv"
    pd.DataFrame({"sentence": ["a film"]}).to_csv(source, index=False)
    result = run("text", "explain-file", str(source), "--out", str(tmp_path / "o"), "--model", model_dir)
    assert result.exit_code == 2
    assert "no column 'text'" in result.output and "sentence" in result.output
