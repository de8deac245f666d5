"""The text report: token and word tables, a corpus summary and word heatmaps on one page."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from lrp_domains.report.blocks import Page, paragraph, table, token_heatmap
from lrp_domains.text.corpus import corpus_summary, token_rows, word_rows
from lrp_domains.text.result import TextExplanation


def write_text_report(results: Sequence[TextExplanation], out_dir: str | Path, title: str = "Text relevance",
                      notes: Sequence[str] = ()) -> dict[str, Path]:
    """Write ``tokens.csv``/``tokens.parquet`` (one row per token), ``words.csv``,
    ``summary.csv`` (words with the highest mean relevance per predicted class) and
    ``report.html`` (a word heatmap per text, the summary). Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokens = pd.concat([token_rows(i, r) for i, r in enumerate(results)], ignore_index=True)
    words = pd.concat([word_rows(i, r) for i, r in enumerate(results)], ignore_index=True)
    summary = corpus_summary(words, top=10, min_count=1)
    written = {"tokens_csv": out / "tokens.csv", "tokens_parquet": out / "tokens.parquet",
               "words": out / "words.csv", "summary": out / "summary.csv"}
    tokens.to_csv(written["tokens_csv"], index=False)
    tokens.to_parquet(written["tokens_parquet"], index=False)
    words.to_csv(written["words"], index=False)
    summary.to_csv(written["summary"], index=False)

    page = Page(title, intro=f"{len(results)} texts, composite {results[0].composite if results else '-'}.")
    heatmaps = page.section("Word relevance")
    heatmaps.add(paragraph("Red words raise the explained class's score, blue words lower it; hover for values."),
                 *(paragraph(n, note=True) for n in notes))
    for result in results:
        heatmaps.add(token_heatmap(result))
    page.section("Corpus summary").add(
        paragraph("Words with the highest mean relevance per predicted class (count = occurrences)."),
        table(summary, max_rows=40))
    overview = pd.DataFrame({
        "text": [r.text for r in results], "prediction": [r.prediction for r in results],
        "probability": [max(r.probabilities.values()) for r in results],
        "explained": [r.explained for r in results], "delta": [r.delta for r in results],
    })
    page.section("Predictions").add(table(overview, max_rows=100))
    written["report"] = page.write(out / "report.html")
    return written
