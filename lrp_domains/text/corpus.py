"""Explaining a file of texts: reading it, writing token tables and per-text HTML as it goes,
and the corpus summary (words with the highest mean relevance per predicted class)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from lrp_domains.text.explainer import TextExplainer, TextTarget
    from lrp_domains.text.result import TextExplanation

SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl")


def read_texts(path: str | Path, column: str = "text") -> list[str]:
    """Texts from ``.csv``/``.tsv`` (a column), ``.txt`` (one per non-empty line) or ``.jsonl``
    (a key per line)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if suffix in (".csv", ".tsv"):
        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        return _column(frame, column, path)
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return _column(pd.DataFrame(rows), column, path)
    raise ValueError(f"{path.name}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}")


def _column(frame: pd.DataFrame, column: str, path: Path) -> list[str]:
    if column not in frame.columns:
        raise ValueError(f"{path.name} has no column {column!r}; its columns are {list(frame.columns)} (use --column)")
    return [str(v) for v in frame[column].tolist()]


def token_rows(index: int, result: TextExplanation) -> pd.DataFrame:
    """The per-token table of one text, with the text's index and prediction."""
    frame = result.to_frame("token")
    frame.insert(0, "text_index", index)
    frame["prediction"] = result.prediction
    frame["target"] = result.target
    return frame


def explain_file(explainer: TextExplainer, path: str | Path, out_dir: str | Path, column: str = "text",
                 target: TextTarget = None, batch_size: int = 16, progress: bool = True) -> dict[str, Path]:
    """Explain every text of ``path``; write ``tokens.csv`` (appended batch by batch, so rows
    already written survive an error), ``tokens.parquet``, ``texts.csv``, ``html/<index>.html``
    and ``summary.csv`` (see :func:`corpus_summary`). Returns the written paths."""
    out = Path(out_dir)
    (out / "html").mkdir(parents=True, exist_ok=True)
    texts = read_texts(path, column)
    if not texts:
        raise ValueError(f"{Path(path).name} contains no texts")
    tokens_csv, texts_csv = out / "tokens.csv", out / "texts.csv"
    for stale in (tokens_csv, texts_csv):
        stale.unlink(missing_ok=True)
    written: list[pd.DataFrame] = []
    word_tables: list[pd.DataFrame] = []
    done = 0
    try:
        for start, batch in _batches(texts, batch_size, progress):
            for offset, text in enumerate(batch):
                if not text.strip():
                    raise ValueError(f"row {start + offset} of {Path(path).name} is empty; there is nothing to explain "
                                     f"(the {done} rows before are in {tokens_csv})")
            try:
                results = explainer.explain(batch, target=target, batch_size=batch_size)
            except (ValueError, TypeError) as error:
                raise type(error)(f"{error} (in rows {start}..{start + len(batch) - 1} of {Path(path).name}; "
                                  f"the {done} rows before are in {tokens_csv})") from error
            frames = [token_rows(start + i, r) for i, r in enumerate(results)]
            batch_frame = pd.concat(frames, ignore_index=True)
            batch_frame.to_csv(tokens_csv, mode="a", header=not tokens_csv.exists(), index=False)
            pd.DataFrame([_text_row(start + i, r) for i, r in enumerate(results)]).to_csv(
                texts_csv, mode="a", header=not texts_csv.exists(), index=False)
            for i, result in enumerate(results):
                (out / "html" / f"{start + i:06d}.html").write_text(html_page(result), encoding="utf-8")
            written.append(batch_frame)
            word_tables.extend(word_rows(start + i, r) for i, r in enumerate(results))
            done += len(batch)
    finally:
        if written:
            pd.concat(written, ignore_index=True).to_parquet(out / "tokens.parquet", index=False)
    summary = corpus_summary(pd.concat(word_tables, ignore_index=True))
    summary.to_csv(out / "summary.csv", index=False)
    return {"tokens_csv": tokens_csv, "tokens_parquet": out / "tokens.parquet", "texts": texts_csv,
            "html": out / "html", "summary": out / "summary.csv"}


def _batches(texts: list[str], size: int, progress: bool) -> Iterator[tuple[int, list[str]]]:
    starts = range(0, len(texts), size)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc="explain", unit="text")
        for start in starts:
            yield start, texts[start:start + size]
            bar.update(len(texts[start:start + size]))
        bar.close()
    else:
        for start in starts:
            yield start, texts[start:start + size]


def _text_row(index: int, result: TextExplanation) -> dict:
    return {"text_index": index, "text": result.text, "prediction": result.prediction, "target": result.target,
            "explained": result.explained, "delta": result.delta, "special_relevance": result.special_relevance,
            **{f"p_{k}": v for k, v in result.probabilities.items()}}


def corpus_summary(words: pd.DataFrame, top: int = 20, min_count: int = 2) -> pd.DataFrame:
    """Per predicted class, the words (lower-cased) with the highest mean relevance over their
    occurrences, with counts. ``words`` has columns prediction, word, relevance (one row per
    word occurrence). Words seen fewer than ``min_count`` times are left out while at least
    ``top`` others remain."""
    words = words.assign(word=words.word.str.lower())
    stats = words.groupby(["prediction", "word"]).relevance.agg(["mean", "count"]).reset_index()
    rows = []
    for cls, group in stats.groupby("prediction"):
        frequent = group[group["count"] >= min_count]
        pool = frequent if len(frequent) >= min(top, len(group)) else group
        best = pool.sort_values(["mean", "word"], ascending=[False, True]).head(top)
        for rank, row in enumerate(best.itertuples(), start=1):
            rows.append({"predicted_class": cls, "rank": rank, "word": row.word,
                         "mean_relevance": row.mean, "count": row.count})
    return pd.DataFrame(rows, columns=["predicted_class", "rank", "word", "mean_relevance", "count"])


def word_rows(index: int, result: TextExplanation) -> pd.DataFrame:
    """The per-word table of one text."""
    frame = result.to_frame("word")
    frame.insert(0, "text_index", index)
    frame["prediction"] = result.prediction
    return frame


def html_page(result: TextExplanation, title: str = "lrp-domains: text explanation") -> str:
    """A self-contained HTML page (no external resources) around :meth:`TextExplanation.to_html`."""
    import html

    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
            f'<body style="max-width:50em;margin:2em auto">{result.to_html()}</body></html>\n')
