"""Inputs read shard by shard: one indexing pass finds where each shard starts, and a shard is
read by seeking there, so no step holds more than one shard (and a resumed run skips finished
shards without reading them).

Text: ``.txt`` (one text per non-empty line), ``.csv``/``.tsv``/``.jsonl`` (a column; one record
per line: fields with line breaks are not supported), ``.parquet`` (a column). Sequences: FASTA,
plain or ``.gz`` (gzip cannot seek: a gzipped shard is reached by decompressing up to it).
Expression: ``.h5ad``, opened in backed mode.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TEXT_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl", ".parquet")
FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fa.gz", ".fasta.gz", ".fna.gz")


@dataclass(frozen=True)
class Shard:
    """Rows ``start:stop`` of the input, beginning at byte ``offset`` (line-based formats)."""

    index: int
    start: int
    stop: int
    offset: int = 0

    @property
    def size(self) -> int:
        return self.stop - self.start


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """SHA-256 and size of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    path = Path(path)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path.resolve()), "sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in FASTA_SUFFIXES + TEXT_SUFFIXES + (".h5ad",):
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"{path.name}: unsupported input; use text ({', '.join(TEXT_SUFFIXES)}), FASTA "
                     f"({', '.join(FASTA_SUFFIXES)}) or .h5ad")


class Source:
    """An input file, indexed into shards of ``shard_size`` rows (see the module docstring)."""

    def __init__(self, path: str | Path, shard_size: int, column: str = "text") -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no such input: {self.path}")
        self.suffix = _suffix(self.path)
        self.column = column
        self.shard_size = shard_size
        self.kind = "sequences" if self.suffix in FASTA_SUFFIXES else "genes" if self.suffix == ".h5ad" else "text"
        self.genes: list[str] | None = None
        self.shards = self._index()

    @property
    def rows(self) -> int:
        """Number of rows (texts, records or cells)."""
        return self.shards[-1].stop if self.shards else 0

    # -- indexing ---------------------------------------------------------------------------
    def _index(self) -> list[Shard]:
        if self.suffix == ".h5ad":
            import anndata

            data = anndata.read_h5ad(self.path, backed="r")
            self.genes = list(map(str, data.var_names))
            count = data.n_obs
            data.file.close()
            return self._ranges(count)
        if self.suffix == ".parquet":
            import pyarrow.parquet as pq

            handle = pq.ParquetFile(self.path)
            if self.column not in handle.schema_arrow.names:
                raise ValueError(f"{self.path.name} has no column {self.column!r}; its columns are "
                                 f"{handle.schema_arrow.names} (use --column)")
            return self._ranges(handle.metadata.num_rows)
        # Only each shard's first byte offset is kept, so indexing memory grows with shards, not rows.
        shard_offsets: list[int] = []
        count = offset = 0
        with self._open_binary() as handle:
            if self.suffix in (".csv", ".tsv"):
                header = handle.readline()
                offset += len(header)
                self._check_header(header)
            for line in handle:
                if self._starts_row(line):
                    if count % self.shard_size == 0:
                        shard_offsets.append(offset)
                    count += 1
                offset += len(line)
        return [Shard(i, i * self.shard_size, min((i + 1) * self.shard_size, count), at)
                for i, at in enumerate(shard_offsets)]

    def _ranges(self, count: int) -> list[Shard]:
        return [Shard(i, a, min(a + self.shard_size, count)) for i, a in enumerate(range(0, count, self.shard_size))]

    def _starts_row(self, line: bytes) -> bool:
        if self.kind == "sequences":
            return line.startswith(b">")
        return bool(line.strip())

    def _check_header(self, header: bytes) -> None:
        delimiter = "\t" if self.suffix == ".tsv" else ","
        names = next(csv.reader([header.decode("utf-8").rstrip("\r\n")], delimiter=delimiter))
        if self.column not in names:
            raise ValueError(f"{self.path.name} has no column {self.column!r}; its columns are {names} (use --column)")
        self._header = names

    def _open_binary(self):
        return gzip.open(self.path, "rb") if self.suffix.endswith(".gz") else self.path.open("rb")

    # -- reading ----------------------------------------------------------------------------
    def read(self, shard: Shard) -> tuple[list[str], Any]:
        """``(ids, items)`` of one shard: texts, sequences, or a DataFrame (cells x genes)."""
        if self.suffix == ".h5ad":
            import anndata

            data = anndata.read_h5ad(self.path, backed="r")
            block = data[shard.start:shard.stop].to_memory()
            data.file.close()
            matrix = block.X.toarray() if hasattr(block.X, "toarray") else np.asarray(block.X)
            return list(map(str, block.obs_names)), pd.DataFrame(matrix, index=block.obs_names, columns=block.var_names)
        if self.suffix == ".parquet":
            import pyarrow.parquet as pq

            handle = pq.ParquetFile(self.path)
            groups, first, skip = [], 0, 0
            for group in range(handle.num_row_groups):  # read only the row groups that hold the shard
                size = handle.metadata.row_group(group).num_rows
                if first < shard.stop and first + size > shard.start:
                    if not groups:
                        skip = shard.start - first
                    groups.append(group)
                first += size
            table = handle.read_row_groups(groups, columns=[self.column]).slice(skip, shard.size)
            values = table.column(self.column).to_pylist()
            self._check_present(shard, [v is not None for v in values], "is null")
            return [str(i) for i in range(shard.start, shard.stop)], [str(v) for v in values]
        lines = self._lines(shard)
        if self.kind == "sequences":
            from Bio import SeqIO

            records = list(SeqIO.parse(io.StringIO("".join(lines)), "fasta"))
            return [r.id for r in records], [str(r.seq) for r in records]
        if self.suffix == ".txt":
            return [str(i) for i in range(shard.start, shard.stop)], [line.rstrip("\r\n") for line in lines]
        if self.suffix == ".jsonl":
            rows = []
            for i, line in enumerate(lines):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{self.path.name}: row {shard.start + i} is not valid JSON ({error}); "
                                     "JSONL needs one JSON object per line") from None
            self._check_present(shard, [isinstance(r, dict) and r.get(self.column) is not None for r in rows],
                                f"has no key {self.column!r} (or it is null)")
            ids = [str(row.get("id", shard.start + i)) for i, row in enumerate(rows)]
            return ids, [str(row[self.column]) for row in rows]
        delimiter = "\t" if self.suffix == ".tsv" else ","
        rows = list(csv.reader(lines, delimiter=delimiter))
        position = self._header.index(self.column)
        self._check_present(shard, [len(row) > position for row in rows],
                            f"has {{fields}} fields, too few for column {self.column!r}", rows)
        ids_at = self._header.index("id") if "id" in self._header else None
        ids = [row[ids_at] if ids_at is not None else str(shard.start + i) for i, row in enumerate(rows)]
        return ids, [row[position] for row in rows]

    def _check_present(self, shard: Shard, present: list[bool], problem: str, rows: list | None = None) -> None:
        """Name the first row (counted from 0, blank lines not counted) whose value is missing."""
        for i, ok in enumerate(present):
            if not ok:
                shown = problem.format(fields=len(rows[i])) if rows is not None else problem
                raise ValueError(f"{self.path.name}: row {shard.start + i} {shown}; fix or drop that row")

    def _lines(self, shard: Shard) -> list[str]:
        """The shard's lines (for FASTA: all lines of its records)."""
        lines: list[str] = []
        count = 0
        with self._open_binary() as handle:
            if self.suffix.endswith(".gz"):
                skipped = 0
                while skipped < shard.offset:  # gzip cannot seek: decompress up to the shard
                    skipped += len(handle.read(min(1 << 20, shard.offset - skipped)))
            else:
                handle.seek(shard.offset)
            for raw in handle:
                if self._starts_row(raw):
                    count += 1
                    if count > shard.size:
                        break
                if self.kind != "sequences" and not raw.strip():
                    continue
                lines.append(raw.decode("utf-8"))
        return lines
