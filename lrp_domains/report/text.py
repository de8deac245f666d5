"""The text report: token and word tables, a corpus summary and word heatmaps on one page."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from lrp_domains.core.engine.ledger import LedgerRows
from lrp_domains.files.writing import OutputFolder
from lrp_domains.report.blocks import Page, figure, paragraph, table, token_heatmap
from lrp_domains.report.ledger import layer_figure, mean_sentence, sentence, text_shares
from lrp_domains.text.corpus import WordStatistics, token_rows, word_rows
from lrp_domains.text.result import TextExplanation


def text_page(result: TextExplanation, title: str = "lrp-domains: text explanation") -> str:
    """One text's word heatmap as a self-contained HTML page."""
    page = Page(title)
    section = page.section("Word relevance").add(token_heatmap(result))
    where = text_shares([result])
    if where is not None:
        section.add(paragraph(f"Where the logit went: {sentence(where[0], 'the logit')}.", note=True))
    return page.render()


def _ledger_section(
    page: Page, results: Sequence[TextExplanation], where: list, folder: OutputFolder, written: dict[str, Path]
) -> None:
    """Where the relevance went, averaged over the texts, and a bar chart per module."""
    rows = LedgerRows.concatenate([r.ledger_rows for r in results if r.ledger_rows is not None])
    fig = layer_figure(rows, [r.explained for r in results])
    with folder.atomic("ledger.png") as temporary:
        block = figure(
            fig, "What each module absorbed (positive) or created (negative), mean over the texts", temporary
        )
    written["ledger"] = folder.root / "ledger.png"
    page.section("Where the relevance went").add(
        paragraph(
            f"Mean over the texts: {mean_sentence(where, 'the logit')}. Each module's share is the relevance "
            "entering it minus the relevance leaving it (the ledger, recorded in the same backward pass); "
            "numerical is what no module accounts for."
        ),
        block,
    )


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
    where = text_shares(results)
    overview = pd.DataFrame(
        {
            "text": [r.text for r in results],
            "prediction": [r.prediction for r in results],
            "probability": [max(r.probabilities.values()) for r in results],
            "explained": [r.explained for r in results],
        }
    )
    if where is None:
        overview["delta"] = [r.delta for r in results]
    else:  # where delta went, instead of a bare delta (tokens.csv keeps the numbers)
        overview["where the explained value went"] = [sentence(parts, "the logit") for parts in where]
    page.section("Predictions").add(table(overview, max_rows=100))
    if where is not None:
        _ledger_section(page, results, where, folder, written)
    written["report"] = folder.write_text("report.html", page.render())
    folder.finish()
    return written
