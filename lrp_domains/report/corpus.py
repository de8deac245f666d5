"""Explaining a file of texts into tables and pages, streamed: one batch in memory at a time.

``explain_file`` reads the file with the text domain's reader (the one every run uses), explains
it batch by batch and appends to ``tokens.csv``, ``tokens.parquet`` and ``texts.csv`` as it goes,
writes a page per text (``html/000000.html``...), and keeps only word sums for ``summary.csv``.
Pages and tables of an earlier run in the same folder that this run does not write again are
removed (only ours: see :class:`~lrp_domains.files.writing.OutputFolder`). A bad row stops the run
with the file, row and id named; the rows before it are kept in the tables.
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


def explain_file(explainer: Any, path: str | Path, out_dir: str | Path, column: str = "text", target: Any = None,
                 batch_size: int = 16, progress: bool = True) -> dict[str, Path]:
    """Explain every text of ``path`` into ``out_dir`` (see the module docstring); returns the
    written paths: ``tokens_csv``, ``tokens_parquet``, ``texts``, ``html``, ``summary``."""
    reader = explainer.reader(path, column)
    shards = reader.shards(max(batch_size, 1))
    if not shards:
        raise InputError(f"{Path(path).name} contains no texts")
    total = shards[-1].stop
    folder = OutputFolder(out_dir, "text-corpus")
    tokens, texts = _Table(folder, "tokens.csv", "tokens.parquet"), _Table(folder, "texts.csv")
    stats = WordStatistics()
    finished = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="explain", unit="text")
    try:
        for shard in shards:
            ids, items = reader.read(shard)
            try:
                results = explainer.explain_batch(ids, items, first_row=shard.start, target=target,
                                                  batch_size=batch_size)
            except ValueError as error:
                raise InputError(f"{reader.path.name}: {error}; the {texts.rows} rows before are in "
                                 f"{folder.root / 'tokens.csv'}") from error
            for offset, result in enumerate(results):
                index = shard.start + offset
                tokens.append(token_rows(index, result))
                stats.add_result(result)
                folder.write_text(f"html/{index:06d}.html", text_page(result))
            texts.append(pd.DataFrame([text_row(shard.start + i, r) for i, r in enumerate(results)]))
            if bar is not None:
                bar.update(len(results))
        finished = True
    finally:
        if bar is not None:
            bar.close()
        keep = finished or texts.rows > 0
        tokens.close(keep)
        texts.close(keep)
        if finished or keep:
            folder.write_text("summary.csv", stats.summary().to_csv(index=False))
            folder.finish()
    return {"tokens_csv": folder.root / "tokens.csv", "tokens_parquet": folder.root / "tokens.parquet",
            "texts": folder.root / "texts.csv", "html": folder.root / "html", "summary": folder.root / "summary.csv"}
