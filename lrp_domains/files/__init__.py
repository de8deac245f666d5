"""Reading inputs and writing outputs safely, for every domain.

- :mod:`~lrp_domains.files.formats`: which format a file is (case-insensitive suffixes, gzip),
  opening it, decoding lines with errors that name the file and line;
- :mod:`~lrp_domains.files.tables`: text records of ``.txt``/``.csv``/``.tsv``/``.jsonl``/``.parquet``
  (CSV with RFC 4180 quoting, TSV without), indexed into shards;
- :mod:`~lrp_domains.files.fasta`: the one FASTA reader;
- :mod:`~lrp_domains.files.writing`: atomic writes (never through a symlink) and output folders
  that clear only their own earlier files.
"""

from lrp_domains.files.fasta import FastaRecords, read_fasta
from lrp_domains.files.formats import Shard
from lrp_domains.files.tables import TableRecords, read_records
from lrp_domains.files.writing import OutputFolder, atomic_path, atomic_write

__all__ = [
    "FastaRecords",
    "OutputFolder",
    "Shard",
    "TableRecords",
    "atomic_path",
    "atomic_write",
    "read_fasta",
    "read_records",
]
