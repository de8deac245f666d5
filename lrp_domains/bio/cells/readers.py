"""Expression data: ``.h5ad`` (AnnData, read in backed mode) and ``.csv``/``.tsv`` tables.

A table's first column names the samples and every other column is a gene, except a label
column (``label_column``) and *metadata*: columns whose values are not numbers (a ``batch`` or
``donor`` column) are ignored and reported as ignored, never fatal. Column names come from the
header itself (a gene named twice is an error naming it; pandas would silently rename the copy).
Empty cells and ``NA`` are NaN (the explainer then names the genes and samples). Both formats are
read shard by shard for runs; :func:`read_expression` reads a whole file for the ``bio genes``
command.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrp_domains.errors import InputError
from lrp_domains.files.formats import Shard, format_of, ranges, require_file
from lrp_domains.files.tables import TableRecords

FORMATS = (".h5ad", ".csv", ".tsv")
MISSING = frozenset({"", "na", "nan", "null", "none"})
#: Rows scanned to tell metadata columns from genes.
SCAN_ROWS = 1000


def _number(value: str) -> float | None:
    text = value.strip()
    if text.lower() in MISSING:
        return float("nan")
    try:
        return float(text)
    except ValueError:
        return None


@contextlib.contextmanager
def _h5ad_errors(path: Path, what: str) -> Iterator[None]:
    """h5py and anndata raise many error types for a damaged file: one InputError naming it. Files
    written by older anndata versions (scanpy's bundled PBMC data) are read without anndata's
    format warnings, as scanpy itself reads them."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="anndata")
            warnings.filterwarnings("ignore", message=".*without encoding metadata")
            yield
    except InputError:
        raise
    except Exception as error:
        raise InputError(
            f"{path.name}: {what} failed, the .h5ad file is damaged or not AnnData ({type(error).__name__}: {error})"
        ) from None


@dataclass
class LabeledCells:
    """One shard's cells (a samples x genes table) with each sample's label (the values of the label
    column a run was given): the items a cells reader returns when it reads a label column."""

    values: pd.DataFrame
    labels: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: slice) -> LabeledCells:
        return LabeledCells(self.values.iloc[index], self.labels[index])


class H5adCells:
    """Cells of an ``.h5ad`` file, read in backed mode shard by shard (with the ``obs`` column
    ``label_column`` when given: the items are then :class:`LabeledCells`)."""

    def __init__(self, path: str | Path, label_column: str | None = None) -> None:
        self.path = require_file(path, "h5ad")
        import anndata

        with _h5ad_errors(self.path, "reading the cells and genes"):
            data = anndata.read_h5ad(self.path, backed="r")
            self.genes = list(map(str, data.var_names))
            self.obs_columns = list(map(str, data.obs.columns))
            self.count = data.n_obs
            data.file.close()
        if label_column is not None and label_column not in self.obs_columns:
            raise InputError(
                f"{self.path.name} has no obs column {label_column!r}; its obs columns are {self.obs_columns}"
            )
        self.label_column = label_column

    def shards(self, shard_size: int) -> list[Shard]:
        return ranges(self.count, shard_size)

    def read(self, shard: Shard) -> tuple[list[str], pd.DataFrame]:
        import anndata

        with _h5ad_errors(self.path, f"reading cells {shard.start} to {shard.stop - 1}"):
            data = anndata.read_h5ad(self.path, backed="r")
            block = data[shard.start : shard.stop].to_memory()
            data.file.close()
            matrix = block.X.toarray() if hasattr(block.X, "toarray") else np.asarray(block.X)
            values = pd.DataFrame(matrix, index=block.obs_names, columns=block.var_names)
            ids = list(map(str, block.obs_names))
            if self.label_column is None:
                return ids, values
            return ids, LabeledCells(values, block.obs[self.label_column].astype(str).tolist())

    def labels(self, column: str) -> list[str]:
        """The ``obs`` column ``column`` as strings."""
        if column not in self.obs_columns:
            raise InputError(f"{self.path.name} has no obs column {column!r}; its obs columns are {self.obs_columns}")
        import anndata

        with _h5ad_errors(self.path, f"reading obs column {column!r}"):
            data = anndata.read_h5ad(self.path, backed="r")
            values = data.obs[column].astype(str).tolist()
            data.file.close()
            return values


class TableCells:
    """Samples of a ``.csv``/``.tsv`` expression table (see the module docstring)."""

    def __init__(self, path: str | Path, label_column: str | None = None) -> None:
        self.records = TableRecords(path, column=None, what="an expression reader")
        self.path = self.records.path
        if self.records.format not in (".csv", ".tsv"):
            raise InputError(f"{self.path.name}: expression tables are .csv or .tsv (or use .h5ad)")
        header = self.records.header
        if len(header) < 2:
            raise InputError(f"{self.path.name}: a table needs a first column of sample names and gene columns")
        self.sample_column = header[0]
        if label_column is not None and label_column not in header[1:]:
            raise InputError(f"{self.path.name} has no column {label_column!r}; its columns are {header[1:]}")
        self.label_column = label_column
        candidates = [c for c in header[1:] if c != label_column]
        self.ignored = self._metadata(candidates)
        self.genes = [c for c in candidates if c not in self.ignored]
        if not self.genes:
            raise InputError(f"{self.path.name}: no column holds numbers, so there are no genes to explain")
        if self.ignored:
            warnings.warn(
                f"{self.path.name}: ignored {len(self.ignored)} column(s) that are not numbers (not genes): "
                f"{', '.join(self.ignored[:8])}",
                stacklevel=3,
            )

    def _metadata(self, candidates: list[str]) -> list[str]:
        found: set[str] = set()
        first = self.records.shards(SCAN_ROWS)
        if first:
            for _, fields in self.records.read_rows(first[0]):
                for column in candidates:
                    value = fields.get(column)
                    if value is not None and _number(value) is None:
                        found.add(column)
        return [c for c in candidates if c in found]

    def shards(self, shard_size: int) -> list[Shard]:
        return self.records.shards(shard_size)

    def _rows(self, shard: Shard) -> list[tuple[int, dict[str, Any]]]:
        return self.records.read_rows(shard)

    def read(self, shard: Shard) -> tuple[list[str], pd.DataFrame | LabeledCells]:
        """Sample names and a samples x genes table (floats; NaN where empty), with the label
        column's values (:class:`LabeledCells`) when the reader was given one."""
        rows = self._rows(shard)
        ids = [fields[self.sample_column] for _, fields in rows]
        values = np.empty((len(rows), len(self.genes)), dtype=np.float32)
        for k, (line, fields) in enumerate(rows):
            for j, gene in enumerate(self.genes):
                number = _number(fields[gene])
                if number is None:
                    raise InputError(
                        f"{self.records.where(shard.start + k, line)}: column {gene!r} holds "
                        f"{fields[gene][:30]!r}, not a number; fix the value, or make it a metadata "
                        "column (non-numeric in the first rows) "
                    )
                values[k, j] = number
        table = pd.DataFrame(values, index=ids, columns=self.genes)
        if self.label_column is None:
            return ids, table
        return ids, LabeledCells(table, [str(fields[self.label_column]) for _, fields in rows])

    def labels(self, column: str) -> list[str]:
        """The column ``column`` (the label column) as strings, in row order."""
        if column not in self.records.header[1:]:
            raise InputError(f"{self.path.name} has no column {column!r}; its columns are {self.records.header[1:]}")
        return [fields[column] for shard in self.shards(4096) for _, fields in self._rows(shard)]


@dataclass
class ExpressionData:
    """A whole expression file: ``data`` (AnnData or a samples x genes DataFrame), ``labels``
    (per sample, when a label column was asked for), ``ignored`` metadata columns."""

    data: Any
    labels: list[str] | None
    ignored: list[str]


def labeled_target(items: Any, target: Any) -> tuple[Any, Any]:
    """``(cells, target)`` for an explainer's batch: a :class:`LabeledCells`' labels are the
    targets (each sample its own label); a target given as well is an InputError."""
    if not isinstance(items, LabeledCells):
        return items, target
    if target is not None:
        raise InputError("give either --target or a label column (--column), not both")
    return items.values, list(items.labels)


def _values(block: pd.DataFrame | LabeledCells) -> pd.DataFrame:
    return block.values if isinstance(block, LabeledCells) else block


def cells_reader(path: str | Path, label_column: str | None = None) -> H5adCells | TableCells:
    """The reader for an expression file: ``.h5ad`` or a ``.csv``/``.tsv`` table; with
    ``label_column``, its items are :class:`LabeledCells`."""
    path = require_file(path, "expression")
    suffix = format_of(path, FORMATS, "an expression reader")
    return H5adCells(path, label_column) if suffix == ".h5ad" else TableCells(path, label_column)


def read_expression(path: str | Path, label_column: str | None = None) -> ExpressionData:
    """A whole ``.h5ad`` (in memory) or table, with the labels of ``label_column`` if given."""
    reader = cells_reader(path, label_column)
    if isinstance(reader, H5adCells):
        import anndata

        labels = reader.labels(label_column) if label_column is not None else None
        with _h5ad_errors(reader.path, "reading the file"):
            return ExpressionData(anndata.read_h5ad(reader.path), labels, [])
    blocks = [_values(reader.read(shard)[1]) for shard in reader.shards(4096)]
    if not blocks:
        raise InputError(f"{reader.path.name} has a header but no samples")
    labels = reader.labels(label_column) if label_column is not None else None
    return ExpressionData(pd.concat(blocks), labels, reader.ignored)
