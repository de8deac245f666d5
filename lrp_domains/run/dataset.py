"""``explain_dataset``: explain a whole file into Parquet shards, resumably, on one machine or on Ray.

Output folder: ``shard-00000.parquet``, ``shard-00001.parquet``, ... (schema:
:mod:`lrp_domains.run.records`) and ``manifest.json`` (input fingerprint, explainer and composite
settings, package versions, completed shards). A shard is written to ``*.parquet.tmp`` and renamed
when complete, and the manifest is replaced atomically after it: a killed run never leaves a
partial shard that looks complete. ``resume=True`` skips the shards the manifest lists (and whose
files exist) and refuses to mix runs whose input or settings differ.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lrp_domains.run.records import explain_rows, kind_of
from lrp_domains.run.sources import Shard, Source, file_fingerprint

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


def model_fingerprint(model: Any) -> str:
    """SHA-256 over the model's parameters and buffers (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        if tensor.numel():
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("lrp-domains", "torch", "transformers", "anndata", "biopython"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def settings_of(explainer: Any, source: Source, options: dict) -> dict[str, Any]:
    """What must match for two runs to share an output folder."""
    settings = {
        "kind": kind_of(explainer), "explainer": type(explainer).__name__,
        "composite": explainer.composite.name, "rules": repr(explainer.composite.rules),
        "model": model_fingerprint(explainer.model), "shard_size": source.shard_size, "column": source.column,
        "options": {k: v for k, v in sorted(options.items()) if k != "batch_size"},
    }
    if settings["kind"] == "genes":
        settings["genes"] = list(explainer.genes)
    return settings


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of an output folder, or None."""
    path = Path(out_dir) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: Path, data: dict) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found.extend(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            shown = [str(v)[:60] for v in (a, b)]
            found.append(f"{prefix}{key}: {shown[0]!r} before, {shown[1]!r} now")
    return found


class ShardWriter:
    """Writes shards atomically and keeps the manifest current."""

    def __init__(self, out_dir: Path, manifest: dict) -> None:
        self.out_dir = out_dir
        self.manifest = manifest

    def done(self, shard: Shard) -> bool:
        entry = self.manifest["shards"].get(str(shard.index))
        return entry is not None and (self.out_dir / entry["file"]).exists()

    def write(self, shard: Shard, rows: pd.DataFrame) -> None:
        name = f"shard-{shard.index:05d}.parquet"
        temporary = self.out_dir / (name + ".tmp")
        # Plain Arrow types, no pandas metadata: shards read back alike from either engine.
        table = pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata(None)
        pq.write_table(table, temporary)
        os.replace(temporary, self.out_dir / name)
        self.manifest["shards"][str(shard.index)] = {"file": name, "rows": len(rows), "start": shard.start}
        self.manifest["complete"] = len(self.manifest["shards"]) == self.manifest["input"]["shards"]
        _write_json(self.out_dir / MANIFEST, self.manifest)


def prepare(explainer: Any, source: Source, out_dir: str | Path, resume: bool, options: dict) -> ShardWriter:
    """Check or start the manifest; clean stale temporary files; return the writer."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder (new, or one holding an earlier run to resume)")
    out.mkdir(parents=True, exist_ok=True)
    # Only our own leftovers: the folder may hold the user's files too.
    for stale in [*out.glob("shard-*.parquet.tmp"), out / (MANIFEST + ".tmp")]:
        stale.unlink(missing_ok=True)
    fingerprint = dict(file_fingerprint(source.path), rows=source.rows, shards=len(source.shards))
    settings = settings_of(explainer, source, options)
    existing = read_manifest(out)
    if existing is not None and resume:
        differences = _differences({"input": existing["input"], "settings": existing["settings"]},
                                   {"input": fingerprint, "settings": settings})
        differences = [d for d in differences if not d.startswith("input.path")]
        if differences:
            raise ValueError(f"{out} holds a run with other input or settings; not mixing them. Differences: "
                             + "; ".join(differences) + ". Use another --out, or --no-resume to start over.")
        return ShardWriter(out, existing)
    if existing is not None:
        for entry in existing.get("shards", {}).values():
            (out / entry["file"]).unlink(missing_ok=True)
    manifest = {"schema": SCHEMA_VERSION, "input": fingerprint, "settings": settings, "versions": _versions(),
                "shards": {}, "complete": False}
    _write_json(out / MANIFEST, manifest)
    return ShardWriter(out, manifest)


def explain_shard(explainer: Any, data: Source, shard: Shard, ids: list[str], items: Any,
                   options: dict) -> pd.DataFrame:
    """``explain_rows`` for one shard (either engine), adding the shard's place in the input to a
    bad-input error."""
    try:
        return explain_rows(explainer, ids, items, shard.start, options)
    except ValueError as error:
        raise ValueError(f"{data.path.name}, shard {shard.index} (rows {shard.start} to {shard.stop - 1}, ids "
                         f"{ids[0]!r} to {ids[-1]!r}): {error}. Finished shards are kept; after fixing the "
                         "input, run again with --no-resume (a changed input is a new run)") from error


def _progress(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="explain", unit="item", disable=not enabled, smoothing=0.1)


def explain_dataset(explainer: Any, source: str | Path, out_dir: str | Path, *, shard_size: int = 1000,
                    resume: bool = True, progress: bool = True, column: str = "text", engine: str = "local",
                    num_workers: int = 1, address: str | None = None, **options: Any) -> Path:
    """Explain every text, sequence record or cell of ``source`` into Parquet shards in ``out_dir``.

    ``explainer``: a ``TextExplainer``, ``SequenceExplainer`` or ``ExpressionExplainer`` (or, for
    ``engine="ray"``, preferably a picklable factory returning one, called once per worker).
    ``options`` go to the explainer (``target``, ``batch_size``; sequences: ``center``,
    ``rc_average``; genes: ``missing``). ``engine="ray"`` runs the same shards on Ray Data with
    ``num_workers`` actors (joining ``address`` or ``RAY_ADDRESS`` if set, else a local cluster).
    Returns the manifest's path.
    """
    factory: Callable[[], Any] | None = None
    if callable(explainer) and not hasattr(explainer, "explain"):
        factory, explainer = explainer, explainer()
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if engine == "ray":
        from lrp_domains.run.ray_engine import require_ray

        require_ray()
    data = Source(source, shard_size, column)
    kind = kind_of(explainer)
    if kind != data.kind:
        raise ValueError(f"a {type(explainer).__name__} explains {kind}, but {Path(source).name} holds {data.kind}")
    if data.rows == 0:
        raise ValueError(f"{Path(source).name} holds no {kind} to explain (empty file, or no records/rows)")
    writer = prepare(explainer, data, out_dir, resume, options)
    todo = [shard for shard in data.shards if not writer.done(shard)]
    done_rows = data.rows - sum(s.size for s in todo)
    if engine == "local":
        with _progress(data.rows, done_rows, progress) as bar:
            for shard in todo:
                ids, items = data.read(shard)
                writer.write(shard, explain_shard(explainer, data, shard, ids, items, options))
                bar.update(shard.size)
    else:
        from lrp_domains.run.ray_engine import run_on_ray

        with _progress(data.rows, done_rows, progress) as bar:
            for shard, rows in run_on_ray(factory or (lambda: explainer), data, todo, options, num_workers, address):
                writer.write(shard, rows)
                bar.update(shard.size)
    return Path(out_dir) / MANIFEST


def read_results(out_dir: str | Path) -> pd.DataFrame:
    """All shards of a finished (or partial) run, in input order."""
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise FileNotFoundError(f"no {MANIFEST} in {out_dir}")
    entries = sorted(manifest["shards"].values(), key=lambda e: e["start"])
    frames = [pd.read_parquet(Path(out_dir) / e["file"]) for e in entries]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def iter_shards(out_dir: str | Path) -> Iterator[pd.DataFrame]:
    """The shards of a run one at a time (constant memory), in input order."""
    manifest = read_manifest(out_dir) or {"shards": {}}
    for entry in sorted(manifest["shards"].values(), key=lambda e: e["start"]):
        yield pd.read_parquet(Path(out_dir) / entry["file"])
