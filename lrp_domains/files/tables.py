"""Text records of table files: ``.txt``, ``.csv``, ``.tsv``, ``.jsonl`` (plain or gzipped) and ``.parquet``.

Each format is read as it is defined, by one reader that every run, command and workflow uses:

- ``.txt``: a record per non-blank line, the line itself (column ``text``);
- ``.csv``: RFC 4180: a header, then records whose quoted fields may hold commas, doubled quotes
  and line breaks (so a record may span lines; rows count records, not lines);
- ``.tsv``: a header, then a record per line, fields split at tabs, no quoting at all (a ``"`` is
  an ordinary character, as in reviews);
- ``.jsonl``: a JSON object per non-blank line;
- ``.parquet``: rows, read by row group.

Rows are counted from 0 over records (blank lines are not rows); messages name the file, the row
and, for line-based formats, the line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lrp_domains.errors import InputError
from lrp_domains.files.formats import (
    Shard,
    decode_line,
    format_of,
    index_records,
    open_binary,
    ranges,
    read_shard_records,
    require_file,
    walk_records,
)

FORMATS = (".txt", ".csv", ".tsv", ".jsonl", ".parquet")
_MODES = {".txt": "line", ".tsv": "row", ".jsonl": "line", ".csv": "csv"}


def _csv_fields(text: str, path: Path, line: int) -> list[str]:
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as error:
        raise InputError(
            f"{path.name}, line {line}: malformed CSV ({error}); quote fields that hold commas, quotes "
            'or line breaks, and write a quote inside a field twice ("")'
        ) from None
    if len(rows) != 1:
        raise InputError(f"{path.name}, line {line}: malformed CSV record (quotes do not pair up)")
    return rows[0]


def _as_text(value: Any) -> str:
    """A non-string value (a number, a list) as text: JSON where it is JSON, else ``str``."""
    if isinstance(value, (dict, list)):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            pass
    return str(value)


class TableRecords:
    """The records of a table file, as fields by column name (see the module docstring).

    ``column``: the column :meth:`read` returns (``"text"``; ``.txt`` files have only that one);
    ``None`` reads every column (:meth:`read_rows`). A missing column is an InputError listing the
    file's columns.
    """

    formats = FORMATS

    def __init__(self, path: str | Path, column: str | None = "text", what: str = "a table reader") -> None:
        self.path = require_file(path)
        self.format = format_of(self.path, FORMATS, what)
        self.column = column
        self.header: list[str] | None = None
        if self.format in (".csv", ".tsv"):
            self.header = self._read_header()
        elif self.format == ".parquet":
            self.header = self._parquet().schema_arrow.names
        elif self.format == ".txt":
            self.header = ["text"]
        if column is not None and self.header is not None and column not in self.header:
            raise InputError(f"{self.path.name} has no column {column!r}; its columns are {self.header} (use --column)")

    # -- header and index -------------------------------------------------------------------
    def _read_header(self) -> list[str]:
        with open_binary(self.path) as handle:
            first = next(walk_records(handle, _MODES[self.format], self.path), None)
        if first is None:
            raise InputError(
                f"{self.path.name} is empty: a {self.format} file starts with a header line naming its columns"
            )
        header = self._fields(first.lines, first.line)
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise InputError(
                f"{self.path.name}, line {first.line}: the header names column(s) {duplicated} more "
                "than once; make the column names unique"
            )
        return header

    def _parquet(self) -> Any:
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except Exception as error:  # pyarrow raises its own types for a file that is not Parquet
            raise InputError(f"{self.path.name}: not a readable Parquet file ({error})") from None

    def shards(self, shard_size: int) -> list[Shard]:
        """The file's records in shards of ``shard_size`` (one pass, one offset kept per shard)."""
        if self.format == ".parquet":
            return ranges(self._parquet().metadata.num_rows, shard_size)
        return index_records(
            self.path, _MODES[self.format], shard_size, skip_header=self.header is not None and self.format != ".txt"
        )

    # -- reading ------------------------------------------------------------------------------
    def _fields(self, lines: list[bytes], line: int) -> list[str]:
        text = "".join(decode_line(raw, self.path, line + k) for k, raw in enumerate(lines))
        if self.format == ".csv":
            return _csv_fields(text, self.path, line)
        return text.rstrip("\r\n").split("\t")

    def read_rows(self, shard: Shard) -> list[tuple[int, dict[str, Any]]]:
        """``(line, fields)`` of each row of ``shard`` (line 0 for Parquet)."""
        if self.format == ".parquet":
            return self._parquet_rows(shard)
        rows = []
        header = self.header if self.header is not None else []  # csv and tsv files always have one
        for record in read_shard_records(self.path, _MODES[self.format], shard):
            if self.format == ".txt":
                text = decode_line(record.lines[0], self.path, record.line)
                rows.append((record.line, {"text": text.rstrip("\r\n")}))
            elif self.format == ".jsonl":
                rows.append((record.line, self._json(record.lines[0], record.line)))
            else:
                values = self._fields(record.lines, record.line)
                if len(values) != len(header):
                    raise InputError(
                        f"{self.where(shard.start + len(rows), record.line)}: {len(values)} fields where "
                        f"the header has {len(header)}; fix or drop that row"
                    )
                rows.append((record.line, dict(zip(header, values))))
        return rows

    def _json(self, raw: bytes, line: int) -> dict[str, Any]:
        text = decode_line(raw, self.path, line)
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:
            raise InputError(
                f"{self.path.name}, line {line}: not valid JSON ({error}); JSONL needs one JSON object per line"
            ) from None
        if not isinstance(value, dict):
            raise InputError(
                f"{self.path.name}, line {line}: a JSON {type(value).__name__}, not an object; JSONL "
                'needs one JSON object per line ({"text": ...})'
            )
        return value

    def _parquet_rows(self, shard: Shard) -> list[tuple[int, dict[str, Any]]]:
        handle = self._parquet()
        groups: list[int] = []
        first, skip = 0, 0
        for group in range(handle.num_row_groups):  # only the row groups that hold the shard
            size = handle.metadata.row_group(group).num_rows
            if first < shard.stop and first + size > shard.start:
                if not groups:
                    skip = shard.start - first
                groups.append(group)
            first += size
        assert self.header is not None  # a Parquet file's: its schema's names
        columns = None if self.column is None else [c for c in (self.column, "id") if c in self.header]
        try:
            table = handle.read_row_groups(groups, columns=columns).slice(skip, shard.size)
            return [(0, row) for row in table.to_pylist()]
        except Exception as error:  # pyarrow raises OSError, ArrowInvalid... for damaged pages
            raise InputError(
                f"{self.path.name}, rows {shard.start} to {shard.stop - 1}: damaged Parquet data ({error})"
            ) from None

    def where(self, row: int, line: int) -> str:
        """``"in.csv, row 3 (line 5)"`` for messages."""
        return f"{self.path.name}, row {row}" + (f" (line {line})" if line else "")

    def read(self, shard: Shard) -> tuple[list[str], list[str]]:
        """Ids (the ``id`` column, else the row number) and the values of :attr:`column`.

        A row without that column (too few fields, no key, null) is an InputError naming it."""
        if self.column is None:
            raise ValueError("read needs a column; use read_rows for whole rows")
        ids, values = [], []
        for k, (line, fields) in enumerate(self.read_rows(shard)):
            row = shard.start + k
            value = fields.get(self.column)
            if value is None:
                problem = "is null" if self.column in fields else f"has no key {self.column!r}"
                raise InputError(f"{self.where(row, line)}: {problem}; fix or drop that row")
            identifier = fields.get("id")
            ids.append(str(row) if identifier is None else str(identifier))
            values.append(value if isinstance(value, str) else _as_text(value))
        return ids, values

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every row as a dict of its fields, in order (one shard in memory at a time)."""
        for shard in self.shards(4096):
            for _, fields in self.read_rows(shard):
                yield fields


def read_records(path: str | Path, columns: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """All rows of a table file as dicts (only ``columns`` when given): the reader workflows use
    for side columns such as gold labels, so they read a file exactly as a run does."""
    reader = TableRecords(path, column=None)
    if columns is not None:
        missing = [c for c in columns if reader.header is not None and c not in reader.header]
        if missing:
            raise InputError(f"{reader.path.name} has no column(s) {missing}; its columns are {reader.header}")
    return [{k: v for k, v in row.items() if columns is None or k in columns} for row in reader]
