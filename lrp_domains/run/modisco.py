"""tfmodisco-lite inputs from a finished sequence run, written shard by shard.

``modisco motifs -s ohe.npy -a attr.npy`` reads ``(N, 4, L)`` arrays from ``.npy`` or ``.npz``
(``arr_0``). A genome-wide run does not fit in memory as one array, so the two ``.npy`` files are
written one shard at a time after a header of their final shape: memory stays at one shard,
whatever the number of sequences.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lrp_domains.errors import InputError
from lrp_domains.run.manifest import finished_run, step_output


def export_modisco(
    out_dir: str | Path, prefix: str | Path | None = None, dtype: np.dtype | type = np.float32
) -> tuple[Path, Path]:
    """Write ``<prefix>ohe.npy`` (one-hot, N x 4 x L, ``N`` as zeros) and ``<prefix>attr.npy``
    (hypothetical contributions, N x 4 x L) from the shards of a sequence run in ``out_dir``.

    ``prefix`` defaults to ``out_dir/``. The run must be complete and its sequences of one length
    (tfmodisco-lite needs equal lengths); otherwise a ValueError says what to do. Rows whose
    ``status`` is not ``ok`` (NaN or Inf) are left out. Returns the two paths.
    """
    out = Path(out_dir)
    manifest, files = finished_run(out, "export-modisco")
    names = set(pq.read_schema(files[0]).names)
    if not {"sequence", "hypothetical"} <= names:
        raise InputError(
            f"{out} holds a {manifest['settings'].get('kind')} run, whose rows have no sequences and "
            "hypothetical contributions; tfmodisco inputs need a sequence run"
        )
    alphabet = str(manifest["settings"].get("alphabet", "ACGT"))
    lengths: dict[int, str] = {}
    count = 0
    for path in files:  # first pass: the sequence column only, to size the arrays
        table = pq.read_table(path, columns=["id", "sequence", *(["status"] if "status" in names else [])])
        for seq_id, sequence, usable in zip(
            table.column("id").to_pylist(), table.column("sequence").to_pylist(), _usable(table)
        ):
            if usable:
                lengths.setdefault(len(sequence), seq_id)
                count += 1
    if not count:
        raise InputError(f"{out}: no row of the run has status ok; nothing to export")
    if len(lengths) != 1:
        shown = ", ".join(f"{n} ({seq_id!r})" for n, seq_id in sorted(lengths.items())[:5])
        raise InputError(
            f"tfmodisco-lite needs sequences of one length; this run has lengths {shown}. "
            "Explain fixed-size windows (e.g. centred on peak summits) instead"
        )
    (length,) = lengths
    prefix = f"{out}/" if prefix is None else str(prefix)
    ohe_path, attr_path = Path(prefix + "ohe.npy"), Path(prefix + "attr.npy")
    ohe_path.parent.mkdir(parents=True, exist_ok=True)
    # Written under temporary names and renamed at the end: an interrupted export never leaves
    # (or half-overwrites) files that look complete. Shards are appended to the files in order
    # after a .npy header of the final shape, so memory holds one shard.
    with step_output(out, ohe_path), step_output(out, attr_path):
        temporary = [Path(f"{p}.tmp") for p in (ohe_path, attr_path)]
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False,
            "shape": (count, len(alphabet), length),
        }
        try:
            _write_arrays(files, temporary, header, length, dtype, count, out, alphabet)
        except BaseException:
            for path in temporary:
                path.unlink(missing_ok=True)
            raise
        for source, target in zip(temporary, (ohe_path, attr_path)):
            os.replace(source, target)
    return ohe_path, attr_path


def _usable(table: pa.Table) -> list[bool]:
    """Per row: True unless its ``status`` says it holds no usable explanation (NaN or Inf)."""
    if "status" not in table.column_names:
        return [True] * table.num_rows
    return [status == "ok" for status in table.column("status").to_pylist()]


def _write_arrays(
    files: list[Path],
    temporary: list[Path],
    header: dict,
    length: int,
    dtype: np.dtype | type,
    count: int,
    out: Path,
    alphabet: str,
) -> None:
    from lrp_domains.bio.sequences.onehot import one_hot

    written = 0
    with temporary[0].open("wb") as ohe, temporary[1].open("wb") as attr:
        for handle in (ohe, attr):
            np.lib.format.write_array_header_1_0(handle, header)
        for path in files:
            columns = ["id", "sequence", "hypothetical"]
            marked = "status" in pq.read_schema(path).names
            table = pq.read_table(path, columns=columns + (["status"] if marked else []))
            keep = [i for i, usable in enumerate(_usable(table)) if usable]  # rows marked non-finite are left out
            if not keep:
                continue
            rows = table.select(columns).take(pa.array(keep, type=pa.int64())).to_pydict()
            n = len(rows["sequence"])
            ohe.write(one_hot(rows["sequence"], alphabet, ids=rows["id"]).numpy().astype(dtype).tobytes())
            attr.write(np.asarray(rows["hypothetical"], dtype=dtype).reshape(n, len(alphabet), length).tobytes())
            written += n
    if written != count:
        raise InputError(f"{out}: the shards hold {written} rows, the manifest says {count}; rerun with --no-resume")
