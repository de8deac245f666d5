"""The one FASTA reader: records indexed into shards, ids checked, every problem named.

A record is a ``>`` header and the sequence lines after it; its id is the header's first word (as
Biopython's), its description the rest. Whitespace inside sequence lines is dropped. Plain or
gzipped files (by content), any suffix case. A header without an id, a record without bases,
text before the first header, binary or non-UTF-8 bytes are InputErrors naming the file, line
and record.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lrp_domains.errors import InputError
from lrp_domains.files.formats import (
    RawRecord,
    Shard,
    decode_line,
    format_of,
    index_records,
    open_binary,
    read_shard_records,
    require_file,
    walk_records,
)

FORMATS = (".fa", ".fasta", ".fna", ".fas", ".faa")


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record: ``id`` (the header's first word), ``description`` (the rest), ``sequence``."""

    id: str
    description: str
    sequence: str
    line: int


def _parse(raw: RawRecord, path: Path) -> FastaRecord:
    header = decode_line(raw.lines[0], path, raw.line)[1:].strip()
    if not header:
        raise InputError(
            f"{path.name}, line {raw.line}: a FASTA header without an id; write '>ID' before each sequence"
        )
    name, _, description = header.partition(" ")
    bases = "".join("".join(decode_line(line, path, raw.line + k + 1).split()) for k, line in enumerate(raw.lines[1:]))
    if not bases:
        raise InputError(
            f"{path.name}, line {raw.line}: record {name!r} has a header but no bases; remove it or add its sequence"
        )
    return FastaRecord(name, description.strip(), bases, raw.line)


class FastaRecords:
    """The records of a FASTA file, shard by shard (see the module docstring)."""

    formats = FORMATS

    def __init__(self, path: str | Path, what: str = "a sequence reader") -> None:
        self.path = require_file(path, "FASTA")
        self.format = format_of(self.path, FORMATS, what)

    def shards(self, shard_size: int) -> list[Shard]:
        """Shards of ``shard_size`` records (one pass; a record with no bases is named here)."""
        shards = index_records(self.path, "fasta", shard_size)
        if not shards:
            raise InputError(f"{self.path.name} holds no FASTA records (no '>' header line)")
        return shards

    def records(self, shard: Shard) -> list[FastaRecord]:
        """The parsed records of one shard."""
        return [_parse(raw, self.path) for raw in read_shard_records(self.path, "fasta", shard)]

    def read(self, shard: Shard) -> tuple[list[str], list[str]]:
        """Ids and sequences of one shard."""
        found = self.records(shard)
        return [r.id for r in found], [r.sequence for r in found]

    def __iter__(self) -> Iterator[FastaRecord]:
        with open_binary(self.path) as handle:
            for raw in walk_records(handle, "fasta", self.path):
                yield _parse(raw, self.path)


def duplicated_ids(ids: Sequence[str]) -> list[str]:
    """Ids that occur more than once, in order of first occurrence."""
    seen: dict[str, int] = {}
    for name in ids:
        seen[name] = seen.get(name, 0) + 1
    return [name for name, count in seen.items() if count > 1]


def read_fasta(path: str | Path, unique: bool = True) -> tuple[list[str], list[str]]:
    """Record ids and sequences of a FASTA file (gzipped too). With ``unique`` (default), ids that
    occur twice are an InputError naming them: results and reports are keyed by id."""
    reader = FastaRecords(path)
    records = list(reader)
    if not records:
        raise InputError(f"{reader.path.name} holds no FASTA records (no '>' header line)")
    ids = [r.id for r in records]
    if unique:
        check_unique(ids, reader.path.name)
    return ids, [r.sequence for r in records]


def check_unique(ids: Sequence[str], where: str) -> None:
    """An InputError naming ``where`` (the file) and the ids that occur more than once, each with the
    numbers (1-based) of its first two records."""
    twice = duplicated_ids(ids)
    if twice:
        numbers: dict[str, list[int]] = {}
        for number, name in enumerate(ids, start=1):
            if len(numbers.setdefault(name, [])) < 2:
                numbers[name].append(number)
        shown = ", ".join(f"{i!r} (records {numbers[i][0]} and {numbers[i][1]})" for i in twice[:8]) + (
            f" and {len(twice) - 8} more" if len(twice) > 8 else ""
        )
        raise InputError(
            f"{where}: record ids occur more than once: {shown}; make each id unique (results, seqlets "
            "and logos are named by id)"
        )
