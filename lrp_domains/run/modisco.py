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
import pyarrow.parquet as pq

from lrp_domains.errors import InputError
from lrp_domains.run.manifest import read_manifest


def export_modisco(out_dir: str | Path, prefix: str | Path | None = None,
                   dtype: np.dtype | type = np.float32) -> tuple[Path, Path]:
    """Write ``<prefix>ohe.npy`` (one-hot, N x 4 x L, ``N`` as zeros) and ``<prefix>attr.npy``
    (hypothetical contributions, N x 4 x L) from the shards of a sequence run in ``out_dir``.

    ``prefix`` defaults to ``out_dir/``. The run must be complete and its sequences of one length
    (tfmodisco-lite needs equal lengths); otherwise a ValueError says what to do. Returns the two
    paths.
    """
    out = Path(out_dir)
    manifest = read_manifest(out)
    if manifest is None:
        raise InputError(f"no manifest.json in {out}: not an explain_dataset output folder")
    if not manifest.get("complete"):
        done, total = len(manifest["shards"]), manifest["input"]["shards"]
        raise InputError(f"{out} is not complete ({done} of {total} shards): resume the run first")
    files = [out / e["file"] for e in sorted(manifest["shards"].values(), key=lambda e: e["start"])]
    names = set(pq.read_schema(files[0]).names)
    if not {"sequence", "hypothetical"} <= names:
        raise InputError(f"{out} holds a {manifest['settings'].get('kind')} run, whose rows have no sequences and "
                         "hypothetical contributions; tfmodisco inputs need a sequence run")
    alphabet = str(manifest["settings"].get("alphabet", "ACGT"))
    lengths: dict[int, str] = {}
    for path in files:  # first pass: the sequence column only, to size the arrays
        for seq_id, sequence in zip(*pq.read_table(path, columns=["id", "sequence"]).to_pydict().values()):
            lengths.setdefault(len(sequence), seq_id)
    if len(lengths) != 1:
        shown = ", ".join(f"{n} ({seq_id!r})" for n, seq_id in sorted(lengths.items())[:5])
        raise InputError(f"tfmodisco-lite needs sequences of one length; this run has lengths {shown}. "
                         "Explain fixed-size windows (e.g. centred on peak summits) instead")
    (length,) = lengths
    count = manifest["input"]["rows"]
    prefix = f"{out}/" if prefix is None else str(prefix)
    ohe_path, attr_path = Path(prefix + "ohe.npy"), Path(prefix + "attr.npy")
    ohe_path.parent.mkdir(parents=True, exist_ok=True)
    # Written under temporary names and renamed at the end: an interrupted export never leaves
    # (or half-overwrites) files that look complete. Shards are appended to the files in order
    # after a .npy header of the final shape, so memory holds one shard.
    temporary = [Path(f"{p}.tmp") for p in (ohe_path, attr_path)]
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": (count, len(alphabet), length)}
    try:
        _write_arrays(files, temporary, header, length, dtype, count, out, alphabet)
    except BaseException:
        for path in temporary:
            path.unlink(missing_ok=True)
        raise
    for source, target in zip(temporary, (ohe_path, attr_path)):
        os.replace(source, target)
    return ohe_path, attr_path


def _write_arrays(files: list[Path], temporary: list[Path], header: dict, length: int, dtype: np.dtype | type,
                  count: int, out: Path, alphabet: str) -> None:
    from lrp_domains.bio.sequences import one_hot

    written = 0
    with temporary[0].open("wb") as ohe, temporary[1].open("wb") as attr:
        for handle in (ohe, attr):
            np.lib.format.write_array_header_1_0(handle, header)
        for path in files:
            table = pq.read_table(path, columns=["id", "sequence", "hypothetical"]).to_pydict()
            n = len(table["sequence"])
            ohe.write(one_hot(table["sequence"], alphabet, ids=table["id"]).numpy().astype(dtype).tobytes())
            attr.write(np.asarray(table["hypothetical"], dtype=dtype).reshape(n, len(alphabet), length).tobytes())
            written += n
    if written != count:
        raise InputError(f"{out}: the shards hold {written} rows, the manifest says {count}; rerun with --no-resume")
