#!/usr/bin/env python
"""Which words drive the sentiment model across a corpus: a resumable dataset run, then a report.

Explains every sentence of SST-2 dev (``datasets/sst2/dev.tsv``, or any ``--data`` file, read as
every run reads it: TSV without quoting, CSV with RFC 4180 quoting) for its predicted class with
AttnLRP, through ``lrp_domains.run.explain_dataset`` (Parquet shards in ``OUT/run``: kill it
and run it again, finished shards are kept). Then, from the shards only:

- ``words.parquet``: one row per word occurrence (sentence row, word, relevance, prediction, gold);
- ``top_words.csv``: per predicted class, the words with the highest mean relevance
  (``lrp_domains.text.corpus.corpus_summary``: lower-cased, seen at least twice);
- ``errors.csv``: the misclassified sentences (when the file has a ``label`` column), most
  confident first, with their three most relevant words: what misled the model;
- ``report.html``: accuracy, a bar chart of the top words per class, the tables, and word heatmaps
  of the most confident errors.

    python workflows/text/sentiment_attribution.py --out runs/sst2-dev              # 872 sentences, ~20 s
    python workflows/text/sentiment_attribution.py --out /tmp/quick --n 64
    python workflows/text/sentiment_attribution.py --data reviews.csv --column review --out runs/reviews
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from lrp_domains.data import sst2_dev
from lrp_domains.files.tables import TableRecords, read_records
from lrp_domains.report.blocks import Page, figure, paragraph, table, token_heatmap
from lrp_domains.run import explain_dataset, iter_shards
from lrp_domains.text import TextExplainer
from lrp_domains.text.corpus import corpus_summary


def default_data() -> Path:
    """The bundled SST-2 dev set."""
    return sst2_dev()


def word_table(run_dir: Path, gold: pd.Series | None) -> pd.DataFrame:
    """One row per word occurrence, read shard by shard from a text run."""
    frames = []
    for shard in iter_shards(run_dir):
        words = shard[["row", "prediction", "words", "word_relevance"]].explode(["words", "word_relevance"])
        frames.append(words.rename(columns={"words": "word", "word_relevance": "relevance"}))
    words = pd.concat(frames, ignore_index=True).astype({"relevance": float, "row": int})
    words = words[words.word.notna()]
    if gold is not None:
        words["gold"] = words.row.map(gold)
    return words.reset_index(drop=True)


def misclassified(run_dir: Path, gold: pd.Series, top: int = 3) -> pd.DataFrame:
    """Sentences whose prediction differs from the gold label, most confident (largest explained
    logit) first, with their ``top`` most relevant words."""
    rows = []
    for shard in iter_shards(run_dir):
        for item in shard.itertuples():
            if item.prediction != gold[item.row]:
                ranked = sorted(zip(item.word_relevance, item.words), reverse=True)[:top]
                rows.append(
                    {
                        "row": item.row,
                        "text": item.text,
                        "gold": gold[item.row],
                        "prediction": item.prediction,
                        "explained": item.explained,
                        "top_words": ", ".join(word for _, word in ranked),
                    }
                )
    frame = pd.DataFrame(rows, columns=["row", "text", "gold", "prediction", "explained", "top_words"])
    return frame.sort_values("explained", ascending=False, ignore_index=True)


def _read_gold(path: Path, column: str, labels: list[str]) -> pd.Series | None:
    """Gold labels by row (0/1 or label names), or None when the file has no ``label`` column.
    Read with the reader the run uses, so rows are the run's rows."""
    header = TableRecords(path, column=None).header or []
    if "label" not in header:
        return None
    values = [row.get("label") for row in read_records(path, ("label",))]
    return pd.Series([labels[int(v)] if str(v).isdigit() else str(v) for v in values])


def first_records(path: Path, n: int) -> str:
    """The header (if any) and the first ``n`` records of a text file, verbatim."""
    from lrp_domains.files.formats import open_binary, walk_records

    reader = TableRecords(path, column=None)
    if reader.format == ".parquet":
        raise SystemExit("--n takes the first rows of a text file (.txt, .csv, .tsv, .jsonl), not of Parquet")
    mode = "csv" if reader.format == ".csv" else "line"
    with open_binary(reader.path) as handle:
        records = walk_records(handle, mode, reader.path)
        keep = [next(records)] if reader.format in (".csv", ".tsv") else []
        for record, _ in zip(records, range(n)):
            keep.append(record)
    return "".join(raw.decode("utf-8") for record in keep for raw in record.lines)


def _top_words_figure(summary: pd.DataFrame, n: int = 12):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted(summary.predicted_class.unique())
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 0.3 * n + 1.2), squeeze=False)
    for ax, cls in zip(axes[0], classes):
        top = summary[summary.predicted_class == cls].head(n).iloc[::-1]
        ax.barh(top.word, top.mean_relevance, color="#c0392b")
        ax.set_title(f"predicted {cls}")
        ax.set_xlabel("mean word relevance")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Run the workflow; returns the written paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="text file (default: SST-2 dev or the examples)")
    parser.add_argument("--column", default="text")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=None, help="only the first N rows")
    parser.add_argument("--composite", default="attnlrp", choices=["attnlrp", "cp-lrp"])
    parser.add_argument("--shard-size", type=int, default=256)
    args = parser.parse_args(argv)

    source = args.data or default_data()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.n is not None:  # a fixed subset file, so a rerun resumes the same run
        subset = args.out / f"input{''.join(source.suffixes)}"
        subset.write_text(first_records(source, args.n), encoding="utf-8")
        source = subset

    explainer = TextExplainer.default(composite=args.composite)
    run_dir = args.out / "run"
    explain_dataset(explainer, source, run_dir, shard_size=args.shard_size, column=args.column)
    gold = _read_gold(source, args.column, list(explainer.labels))

    written: dict[str, Path] = {}
    words = word_table(run_dir, gold)
    words.to_parquet(args.out / "words.parquet", index=False)
    written["words"] = args.out / "words.parquet"
    summary = corpus_summary(words[["prediction", "word", "relevance"]], top=20, min_count=2)
    summary.to_csv(args.out / "top_words.csv", index=False)
    written["top_words"] = args.out / "top_words.csv"

    sentences = words.row.nunique()
    page = Page(
        f"Word relevance over {source.name}",
        intro=f"{sentences} sentences explained for their predicted class with {args.composite} "
        f"(default sentiment model); relevance read from the shards in {run_dir.name}/.",
    )
    overview = page.section("Summary")
    if gold is not None:
        errors = misclassified(run_dir, gold)
        errors.to_csv(args.out / "errors.csv", index=False)
        written["errors"] = args.out / "errors.csv"
        accuracy = 1 - len(errors) / sentences
        overview.add(
            paragraph(f"Accuracy against the gold labels: {accuracy:.3f} ({sentences - len(errors)} of {sentences}).")
        )
        print(f"accuracy {accuracy:.4f} on {sentences} sentences")
    overview.add(
        figure(
            _top_words_figure(summary),
            "Words with the highest mean relevance for each predicted class (seen at least twice).",
            args.out / "top_words.png",
        )
    )
    written["figure"] = args.out / "top_words.png"
    page.section("Top words per predicted class").add(table(summary, max_rows=40))
    if gold is not None and len(errors):
        worst = page.section("Most confident errors")
        worst.add(paragraph("Red words pushed the model towards its (wrong) prediction.", note=True))
        for result in explainer.explain(errors.text.head(5).tolist()):
            worst.add(token_heatmap(result))
        worst.add(table(errors.head(20)))
    written["report"] = page.write(args.out / "report.html")
    for name, path in written.items():
        print(f"{name}: {path}")
    return written


if __name__ == "__main__":
    main()
