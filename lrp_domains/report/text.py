"""The text report: token and word tables, a corpus summary and word heatmaps on one page."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from lrp_domains.files.writing import OutputFolder
from lrp_domains.report.blocks import Page, paragraph, table, token_heatmap
from lrp_domains.text.corpus import WordStatistics, token_rows, word_rows
from lrp_domains.text.result import TextExplanation


def text_page(result: TextExplanation, title: str = "lrp-domains: text explanation") -> str:
    """One text's word heatmap as a self-contained HTML page."""
    page = Page(title)
    page.section("Word relevance").add(token_heatmap(result))
    return page.render()


def write_text_report(
    results: Sequence[TextExplanation], out_dir: str | Path, title: str = "Text relevance", notes: Sequence[str] = ()
) -> dict[str, Path]:
    """Write ``tokens.csv``/``tokens.parquet`` (one row per token), ``words.csv``,
    ``summary.csv`` (words with the highest mean relevance per predicted class) and
    ``report.html`` (a word heatmap per text, the summary). Returns the paths."""
    folder = OutputFolder(out_dir, "text-report")
    tokens = pd.concat([token_rows(i, r) for i, r in enumerate(results)], ignore_index=True)
    words = pd.concat([word_rows(i, r) for i, r in enumerate(results)], ignore_index=True)
    stats = WordStatistics()
    for result in results:
        stats.add_result(result)
    summary = stats.summary(top=10, min_count=1)
    written = {}
    for key, name, frame in (
        ("tokens_csv", "tokens.csv", tokens),
        ("words", "words.csv", words),
        ("summary", "summary.csv", summary),
    ):
        written[key] = folder.write_text(name, frame.to_csv(index=False))
    with folder.atomic("tokens.parquet") as temporary:
        tokens.to_parquet(temporary, index=False)
    written["tokens_parquet"] = folder.root / "tokens.parquet"

    page = Page(title, intro=f"{len(results)} texts, composite {results[0].composite if results else '-'}.")
    heatmaps = page.section("Word relevance")
    heatmaps.add(
        paragraph("Red words raise the explained class's score, blue words lower it; hover for values."),
        *(paragraph(n, note=True) for n in notes),
    )
    for result in results:
        heatmaps.add(token_heatmap(result))
    page.section("Corpus summary").add(
        paragraph("Words with the highest mean relevance per predicted class (count = occurrences)."),
        table(summary, max_rows=40),
    )
    overview = pd.DataFrame(
        {
            "text": [r.text for r in results],
            "prediction": [r.prediction for r in results],
            "probability": [max(r.probabilities.values()) for r in results],
            "explained": [r.explained for r in results],
            "delta": [r.delta for r in results],
        }
    )
    page.section("Predictions").add(table(overview, max_rows=100))
    written["report"] = folder.write_text("report.html", page.render())
    folder.finish()
    return written
