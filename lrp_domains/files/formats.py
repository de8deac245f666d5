"""Which format a file is, opening it, and walking its records with byte offsets.

Suffixes are matched case-insensitively (``UP.FA.GZ`` is gzipped FASTA). A record is what a row
of output stands for: a non-blank line (``.txt``, ``.tsv``, ``.jsonl``), a CSV record (RFC 4180:
a quoted field may hold line breaks, so a record may span lines), or a FASTA record (a ``>``
header and its sequence lines). :func:`walk_records` yields each record's byte offset and first
line number, so an index can keep one offset per shard and a shard can be read by seeking there.
Undecodable bytes and binary files are :class:`~lrp_domains.errors.InputError` s naming the file
and line.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

from lrp_domains.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Shard:
    """Rows ``start:stop`` of an input, beginning at byte ``offset`` and line ``line`` (line-based
    formats; both 0 otherwise)."""

    index: int
    start: int
    stop: int
    offset: int = 0
    line: int = 0

    @property
    def size(self) -> int:
        return self.stop - self.start


def format_of(path: Path, formats: Sequence[str], what: str) -> str:
    """The suffix of ``path`` among ``formats`` (longest first, case-insensitive, ``.gz`` allowed
    after any of them), e.g. ``.fa`` for ``UP.FA.GZ``; an InputError listing ``formats`` otherwise."""
    name = path.name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    for suffix in sorted(formats, key=len, reverse=True):
        if stem.endswith(suffix):
            return suffix
    shown = ", ".join(formats)
    raise InputError(f"{path.name}: not a file type {what} reads; use {shown} (optionally gzipped, .gz)")


def require_file(path: str | Path, what: str = "input") -> Path:
    """``path`` as a Path; an InputError when it is missing or a folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such {what} file: {path}")
    if not path.is_file():
        raise InputError(f"{path} is a folder, not a file; give the {what} file itself")
    return path


def is_gzip(path: Path) -> bool:
    """True when the file starts with the gzip magic bytes (whatever its name)."""
    with path.open("rb") as handle:
        return handle.read(2) == GZIP_MAGIC


#: An open binary file: ``open(path, "rb")``'s, or a gzip stream (``open_binary``).
BinaryHandle = Union[BinaryIO, io.BufferedIOBase]


def open_binary(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed when it is gzipped (by content, not by name)."""
    if is_gzip(path):
        return gzip.open(path, "rb")
    return path.open("rb")


def decode_line(raw: bytes, path: Path, line: int) -> str:
    """A line as text; an InputError naming the file and line for binary or non-UTF-8 bytes."""
    if b"\x00" in raw:
        raise InputError(
            f"{path.name}, line {line}: a NUL byte; this is a binary file, not text. Give a text file (UTF-8)"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = raw[error.start : error.start + 1].hex()
        raise InputError(
            f"{path.name}, line {line}: byte 0x{bad} at column {error.start + 1} is not UTF-8; save the "
            "file as UTF-8 (it may be Latin-1 or binary)"
        ) from None


@dataclass
class RawRecord:
    """One record: its byte offset, first line number (1-based), and its lines as bytes."""

    offset: int
    line: int
    lines: list[bytes]


#: What a damaged gzip stream raises while it is read.
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _lines(handle: BinaryHandle, path: Path) -> Iterator[bytes]:
    """The handle's lines; a damaged gzip stream is an InputError naming the file."""
    try:
        yield from handle
    except GZIP_ERRORS as error:
        raise InputError(f"{path.name}: a damaged gzip file ({error}); download or compress it again") from None


def walk_records(handle: BinaryHandle, mode: str, path: Path, offset: int = 0, line: int = 1) -> Iterator[RawRecord]:
    """The records of ``handle`` from byte ``offset`` (which is line number ``line``) on.

    ``mode``: ``"line"`` (each line that is not blank), ``"row"`` (each line that is not empty: a
    line of tabs or spaces is a record of empty fields), ``"csv"`` (as ``"row"``, with lines joined
    while a quoted field is open: an odd number of ``"`` so far) or ``"fasta"`` (a ``>`` line and
    the lines after it). Blank lines between records are skipped.
    """
    try:
        if offset:
            handle.seek(offset)
    except GZIP_ERRORS as error:
        raise InputError(f"{path.name}: a damaged gzip file ({error}); download or compress it again") from None
    position, number = offset, line
    current: RawRecord | None = None
    quotes = 0
    for raw in _lines(handle, path):
        size = len(raw)
        blank = not raw.strip() if mode in ("line", "fasta") else not raw.rstrip(b"\r\n")
        if mode in ("line", "row"):
            if not blank:
                yield RawRecord(position, number, [raw])
        elif mode == "csv":
            if current is None:
                if not blank:
                    current, quotes = RawRecord(position, number, [raw]), raw.count(b'"')
            else:
                current.lines.append(raw)
                quotes += raw.count(b'"')
            if current is not None and quotes % 2 == 0:
                yield current
                current = None
        elif mode == "fasta":
            if raw.startswith(b">"):
                if current is not None:
                    yield current
                current = RawRecord(position, number, [raw])
            elif current is not None:
                current.lines.append(raw)
            elif not blank:
                text = raw[:40].decode("utf-8", errors="replace").strip()
                raise InputError(
                    f"{path.name}, line {number}: {text!r} comes before any FASTA header; a FASTA file "
                    "starts with a '>' line"
                )
        else:  # pragma: no cover - callers pass one of the four
            raise ValueError(f"unknown record mode {mode!r}")
        position += size
        number += 1
    if current is not None:
        if mode == "csv":
            raise InputError(
                f"{path.name}, line {current.line}: a quoted field opened here is never closed; check "
                'the quotes of that record (a quote inside a field is written twice: "")'
            )
        yield current


def index_records(path: Path, mode: str, shard_size: int, skip_header: bool = False) -> list[Shard]:
    """Shards of ``shard_size`` records, each with its first record's byte offset and line.

    Every line is decoded on the way, so a binary or non-UTF-8 file is named before a run starts."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    starts: list[tuple[int, int]] = []
    count = 0
    with open_binary(path) as handle:
        records = walk_records(handle, mode, path)
        if skip_header:
            next(records, None)
        for record in records:
            for k, raw in enumerate(record.lines):
                decode_line(raw, path, record.line + k)
            if count % shard_size == 0:
                starts.append((record.offset, record.line))
            count += 1
    return [
        Shard(i, i * shard_size, min((i + 1) * shard_size, count), offset, line)
        for i, (offset, line) in enumerate(starts)
    ]


def read_shard_records(path: Path, mode: str, shard: Shard) -> list[RawRecord]:
    """The records of one shard (seeking to its offset)."""
    found = []
    with open_binary(path) as handle:
        for record in walk_records(handle, mode, path, shard.offset, shard.line):
            found.append(record)
            if len(found) == shard.size:
                break
    return found


def ranges(count: int, shard_size: int) -> list[Shard]:
    """Shards of ``shard_size`` rows for formats read by row number (Parquet, h5ad)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [Shard(i, start, min(start + shard_size, count)) for i, start in enumerate(range(0, count, shard_size))]
