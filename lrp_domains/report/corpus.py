"""A text run as tables and pages, streamed: one shard in memory at a time.

``corpus_from_run`` reads a finished text run shard by shard and appends to ``tokens.csv``,
``tokens.parquet`` and ``texts.csv`` as it goes, writes a page per text (``html/000000.html``...),
and keeps only word sums for ``summary.csv``. ``explain_file`` (``lrp-domains text explain-file``)
is a run into ``OUT/run`` and this step: one pipeline, the rows of ``lrp-domains run text``. Pages
and tables of an earlier report in the same folder that this one does not write again are removed
(only ours: see :class:`~lrp_domains.files.writing.OutputFolder`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lrp_domains.errors import InputError
from lrp_domains.files.writing import OutputFolder, PendingFile
from lrp_domains.report.text import text_page
from lrp_domains.text.corpus import WordStatistics, text_row, token_rows


class _Table:
    """A CSV and (optionally) a Parquet file appended batch by batch under temporary names."""

    def __init__(self, folder: OutputFolder, name: str, parquet: str | None = None) -> None:
        self._csv_file = PendingFile(folder.path(name))
        self._csv = self._csv_file.temporary.open("w", newline="", encoding="utf-8")
        self._parquet_file = PendingFile(folder.path(parquet)) if parquet else None
        self._writer: pq.ParquetWriter | None = None
        self._columns: list[str] | None = None
        self.rows = 0

    def append(self, frame: pd.DataFrame) -> None:
        if self._columns is None:
            self._columns = list(frame.columns)
            csv.writer(self._csv).writerow(self._columns)
        frame = frame.reindex(columns=self._columns)
        frame.to_csv(self._csv, header=False, index=False)
        if self._parquet_file is not None:
            table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._parquet_file.temporary, table.schema)
            self._writer.write_table(table.cast(self._writer.schema))
        self.rows += len(frame)

    def close(self, keep: bool) -> None:
        """Close; with ``keep`` rename into place (even when empty), else drop the temporaries."""
        self._csv.close()
        if self._writer is not None:
            self._writer.close()
        elif self._parquet_file is not None and keep:
            pq.write_table(pa.table({}), self._parquet_file.temporary)
        for pending in (self._csv_file, self._parquet_file):
            if pending is None:
                continue
            if keep:
                pending.commit()
            else:
                pending.discard()


def corpus_from_run(run_dir: str | Path, out_dir: str | Path, progress: bool = False) -> dict[str, Path]:
    """The corpus tables and pages of a finished text run, written shard by shard (one shard in
    memory): ``tokens.csv``/``tokens.parquet`` (a row per token), ``texts.csv`` (a row per text),
    ``html/000000.html``... (a page per text, named by its row in the input) and ``summary.csv``
    (the words with the highest mean relevance per predicted class). Rows whose status is not
    ``ok`` are left out of the tables and pages and counted in ``texts.csv``'s absence; returns the
    written paths (``tokens_csv``, ``tokens_parquet``, ``texts``, ``html``, ``summary``)."""
    from lrp_domains.run.manifest import finished_run
    from lrp_domains.text.result import explanations_from_rows

    manifest, files = finished_run(run_dir, "the corpus tables")
    if manifest["settings"].get("kind") != "text":
        raise InputError(f"{run_dir} holds a {manifest['settings'].get('kind')} run; the corpus tables read text runs")
    composite = str(manifest["settings"].get("composite", ""))
    folder = OutputFolder(out_dir, "text-corpus")
    tokens, texts = _Table(folder, "tokens.csv", "tokens.parquet"), _Table(folder, "texts.csv")
    stats = WordStatistics()
    finished = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=manifest["input"]["rows"], desc="tables", unit="text")
    try:
        for path in files:
            rows = pd.read_parquet(path)
            if "status" in rows:
                rows = rows[rows["status"] == "ok"]
            results = explanations_from_rows(rows, composite)
            for index, result in zip(rows["row"], results):
                tokens.append(token_rows(int(index), result))
                stats.add_result(result)
                folder.write_text(f"html/{int(index):06d}.html", text_page(result))
            if results:
                texts.append(pd.DataFrame([text_row(int(i), r) for i, r in zip(rows["row"], results)]))
            if bar is not None:
                bar.update(len(rows))
        finished = True
    finally:
        if bar is not None:
            bar.close()
        tokens.close(finished)
        texts.close(finished)
        if finished:
            folder.write_text("summary.csv", stats.summary().to_csv(index=False))
            folder.finish()
        else:
            folder.close()
    return {
        "tokens_csv": folder.root / "tokens.csv",
        "tokens_parquet": folder.root / "tokens.parquet",
        "texts": folder.root / "texts.csv",
        "html": folder.root / "html",
        "summary": folder.root / "summary.csv",
    }


#: Where :func:`explain_file` keeps its run, inside its output folder.
RUN_FOLDER = "run"


def explain_file(
    explainer: Any,
    path: str | Path,
    out_dir: str | Path,
    column: str | None = None,
    target: Any = None,
    batch_size: int = 16,
    progress: bool = True,
    shard_size: int = 1000,
    resume: bool = True,
) -> dict[str, Path]:
    """Explain every text of ``path``: a run into ``out_dir/run`` (:func:`~lrp_domains.run.explain_dataset`,
    resumable; a bad row stops it with the file, row and id named, keeping the finished shards),
    then :func:`corpus_from_run` into ``out_dir``. Returns the written paths, and ``run``."""
    from lrp_domains.files.writing import claim_folder
    from lrp_domains.run import explain_dataset

    out = Path(out_dir)
    with claim_folder(out, "text-corpus", ["tokens.csv", "texts.csv", "summary.csv"]):
        explain_dataset(
            explainer,
            path,
            out / RUN_FOLDER,
            column=column,
            target=target,
            batch_size=batch_size,
            progress=progress,
            shard_size=shard_size,
            resume=resume,
            replace_other=True,
            ledger=True,
        )
        written = corpus_from_run(out / RUN_FOLDER, out, progress=progress)
    return {**written, "run": out / RUN_FOLDER}
