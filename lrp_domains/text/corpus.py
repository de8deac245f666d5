"""Tables of text explanations (tokens, words) and the corpus summary: the words with the highest
mean relevance per predicted class, accumulated text by text so a corpus never sits in memory."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from lrp_domains.text.result import TextExplanation

SUMMARY_COLUMNS = ["predicted_class", "rank", "word", "mean_relevance", "count"]


def token_rows(index: int, result: TextExplanation) -> pd.DataFrame:
    """The per-token table of one text, with the text's index and prediction."""
    frame = result.to_frame("token")
    frame.insert(0, "text_index", index)
    frame["prediction"] = result.prediction
    frame["target"] = result.target
    return frame


def word_rows(index: int, result: TextExplanation) -> pd.DataFrame:
    """The per-word table of one text."""
    frame = result.to_frame("word")
    frame.insert(0, "text_index", index)
    frame["prediction"] = result.prediction
    return frame


def text_row(index: int, result: TextExplanation) -> dict:
    """One text's prediction, explained value and delta, as a table row (``probabilities``: a JSON
    object, class or token -> probability)."""
    return {
        "text_index": index,
        "text": result.text,
        "prediction": result.prediction,
        "target": result.target,
        "explained": result.explained,
        "delta": result.delta,
        "special_relevance": result.special_relevance,
        "truncated": result.truncated,
        "probabilities": json.dumps(result.probabilities),
    }


class WordStatistics:
    """Sum and count of word relevance per (predicted class, lower-cased word), added text by text."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], list[float]] = {}

    def add(self, prediction: str, words: Iterable[str], relevance: Iterable[float]) -> None:
        """Add one text's (or several occurrences') words and their relevance."""
        for word, value in zip(words, relevance):
            entry = self._stats.setdefault((str(prediction), str(word).lower()), [0.0, 0])
            entry[0] += float(value)
            entry[1] += 1

    def add_result(self, result: TextExplanation) -> None:
        """Add the words of one explanation, under its predicted class."""
        self.add(result.prediction, result.words, result.word_relevance.tolist())

    def summary(self, top: int = 20, min_count: int = 2) -> pd.DataFrame:
        """Per predicted class, the ``top`` words with the highest mean relevance; words seen fewer
        than ``min_count`` times are left out while at least ``top`` others remain."""
        stats = pd.DataFrame(
            [(cls, word, total / count, count) for (cls, word), (total, count) in self._stats.items()],
            columns=["prediction", "word", "mean", "count"],
        )
        rows = []
        for cls, group in stats.groupby("prediction"):
            frequent = group[group["count"] >= min_count]
            pool = frequent if len(frequent) >= min(top, len(group)) else group
            best = pool.sort_values(["mean", "word"], ascending=[False, True]).head(top)
            for rank, row in enumerate(best.itertuples(), start=1):
                rows.append(
                    {
                        "predicted_class": cls,
                        "rank": rank,
                        "word": row.word,
                        "mean_relevance": row.mean,
                        "count": row.count,
                    }
                )
        return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def corpus_summary(words: pd.DataFrame, top: int = 20, min_count: int = 2) -> pd.DataFrame:
    """:meth:`WordStatistics.summary` of a word table with columns prediction, word, relevance
    (one row per word occurrence)."""
    stats = WordStatistics()
    for prediction, group in words.groupby("prediction", sort=False):
        stats.add(prediction, group["word"].tolist(), group["relevance"].tolist())
    return stats.summary(top, min_count)
