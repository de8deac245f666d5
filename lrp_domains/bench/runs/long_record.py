"""``lrp-domains bench long-record``: what one long record costs ``bio sequences``.

Two FASTA files: ``n`` records of ``length`` bases, and the same plus one record of ``long``
bases. Each is explained by ``lrp-domains bio sequences`` (default CNN, no motif matching) in a
fresh process; the table gives each run's peak resident memory and the size of what it wrote.
Records are explained in groups of equal length and nothing is padded, so the long record should
cost about its own size, not ``n`` times it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _fasta(path: Path, n: int, length: int, long: int | None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with path.open("w") as handle:
        for i in range(n):
            handle.write(f">r{i}\n{''.join(rng.choice(list('ACGT'), length))}\n")
        if long:
            handle.write(f">long\n{''.join(rng.choice(list('ACGT'), long))}\n")
    return path


def _peak_of(fasta: Path, out: Path) -> int:
    """Peak RSS (bytes) of ``bio sequences`` on ``fasta`` in a child process (run alone)."""
    code = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    command = [
        sys.executable,
        "-m",
        "lrp_domains",
        "bio",
        "sequences",
        str(fasta),
        "--out",
        str(out),
        "--motifs",
        "none",
        "--no-progress",
    ]
    done = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1]) * 1024  # ru_maxrss is in KiB on Linux


def run(n: int = 200, length: int = 200, long: int = 100_000) -> list[dict]:
    """One row per input: records, peak memory, bytes written."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("short only", None), ("plus one long record", long)):
            fasta = _fasta(Path(tmp) / f"{len(rows)}.fa", n, length, extra)
            out = Path(tmp) / f"out{len(rows)}"
            peak = _peak_of(fasta, out)
            written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            rows.append(
                {
                    "input": name,
                    "records": n + (1 if extra else 0),
                    "bases": n * length + (extra or 0),
                    "peak_mib": peak / 2**20,
                    "written_mib": written / 2**20,
                }
            )
    return rows


def print_table(rows: list[dict]) -> None:
    """The rows, and the ratios of the second to the first."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="bench long-record: lrp-domains bio sequences, default CNN, fresh processes")
    for column in ("input", "records", "bases", "peak MiB", "written MiB"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["input"],
            str(row["records"]),
            f"{row['bases']:,}",
            f"{row['peak_mib']:.0f}",
            f"{row['written_mib']:.2f}",
        )
    Console().print(table)
    first, second = rows
    print(
        f"one long record: peak memory {second['peak_mib'] / first['peak_mib']:.2f}x, written "
        f"{second['written_mib'] / first['written_mib']:.2f}x (bases {second['bases'] / first['bases']:.2f}x)"
    )
