"""``explain_dataset``: explain a whole file into Parquet shards, resumably, on one machine or on Ray.

Any explainer that fulfils the contract of :mod:`lrp_domains.domains` can run: it reads its input
(``explainer.reader``) and turns each shard into rows (``explainer.explain_rows``); this module
only shards, writes and resumes. Output folder: ``shard-00000.parquet``, ``shard-00001.parquet``,
... (columns ``row``, ``id`` and the explainer's ``columns``) and ``manifest.json`` (see
:mod:`lrp_domains.run.manifest`: input fingerprint, settings, package versions, completed
shards). A shard is written to ``*.parquet.tmp`` and renamed when complete, and the manifest is
replaced atomically after it: a killed run never leaves a partial shard that looks complete.
``resume=True`` skips the shards the manifest lists (and whose files exist) and refuses to mix
runs whose input or settings differ.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lrp_domains.domains import DomainExplainer, Reader, kind_of
from lrp_domains.errors import InputError
from lrp_domains.files.formats import Shard
from lrp_domains.models import model_fingerprint
from lrp_domains.run.manifest import (
    MANIFEST,
    differences,
    new_manifest,
    read_manifest,
    shard_name,
    write_manifest,
)

__all__ = ["explain_dataset", "file_fingerprint", "iter_shards", "read_manifest", "read_results"]


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """SHA-256 and size of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    path = Path(path)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path.resolve()), "sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("lrp-domains", "torch", "transformers", "anndata", "biopython"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def settings_of(explainer: DomainExplainer, shard_size: int, column: str, options: dict) -> dict[str, Any]:
    """What must match for two runs to share an output folder (the domain adds its own)."""
    settings = {
        "kind": explainer.kind, "explainer": f"{type(explainer).__module__}.{type(explainer).__qualname__}",
        "composite": explainer.composite.name, "rules": repr(explainer.composite.rules),
        "model": model_fingerprint(explainer.model), "shard_size": shard_size, "column": column,
        "options": {k: v for k, v in sorted(options.items()) if k != "batch_size"},
    }
    domain = explainer.settings()
    clash = sorted(set(domain) & set(settings))
    if clash:
        raise TypeError(f"{type(explainer).__name__}.settings() may not redefine {clash}: the run sets those")
    settings.update(domain)
    return settings


class ShardWriter:
    """Writes shards atomically and keeps the manifest current."""

    def __init__(self, out_dir: Path, manifest: dict) -> None:
        self.out_dir = out_dir
        self.manifest = manifest

    def done(self, shard: Shard) -> bool:
        entry = self.manifest["shards"].get(str(shard.index))
        return entry is not None and (self.out_dir / entry["file"]).is_file()

    def write(self, shard: Shard, rows: pd.DataFrame) -> None:
        name = shard_name(shard.index)
        temporary = self.out_dir / (name + ".tmp")
        # Plain Arrow types, no pandas metadata: shards read back alike from either engine.
        table = pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata(None)
        pq.write_table(table, temporary)
        os.replace(temporary, self.out_dir / name)
        self.manifest["shards"][str(shard.index)] = {"file": name, "rows": len(rows), "start": shard.start}
        self.manifest["complete"] = len(self.manifest["shards"]) == self.manifest["input"]["shards"]
        write_manifest(self.out_dir, self.manifest)


def prepare(explainer: DomainExplainer, reader: Reader, shards: list[Shard], out_dir: str | Path, resume: bool,
            shard_size: int, column: str, options: dict) -> ShardWriter:
    """Check or start the manifest (refusing folders that are not ours); clean our stale temporary
    files; return the writer."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder (new, or one holding an earlier run to resume)")
    existing = read_manifest(out) if out.is_dir() else None
    out.mkdir(parents=True, exist_ok=True)
    # Only our own leftovers: the folder may hold the user's files too.
    for stale in [*out.glob("shard-*.parquet.tmp"), *out.glob(f".{MANIFEST}.*.tmp")]:
        if stale.is_symlink() or stale.is_file():
            stale.unlink()
    taken = [p.name for p in out.glob("shard-*.parquet*") if p.is_dir() and not p.is_symlink()]
    if taken:
        raise InputError(f"{out} holds folders named like our shards ({', '.join(sorted(taken)[:3])}); move them, "
                         "or choose another --out")
    fingerprint = dict(file_fingerprint(reader.path), rows=shards[-1].stop, shards=len(shards))
    settings = settings_of(explainer, shard_size, column, options)
    if existing is not None and resume:
        found = differences({"input": existing["input"], "settings": existing["settings"]},
                            {"input": fingerprint, "settings": settings})
        found = [d for d in found if not d.startswith("input.path")]
        if found:
            raise InputError(f"{out} holds a run with other input or settings; not mixing them. Differences: "
                             + "; ".join(found) + ". Use another --out, or --no-resume to start over.")
        return ShardWriter(out, existing)
    if existing is not None:  # read_manifest let through only our own shard names
        for entry in existing["shards"].values():
            old = out / entry["file"]
            if old.is_symlink() or old.is_file():
                old.unlink()
    manifest = new_manifest(fingerprint, settings, _versions())
    write_manifest(out, manifest)
    return ShardWriter(out, manifest)


def explain_shard(explainer: DomainExplainer, reader: Reader, shard: Shard, options: dict) -> pd.DataFrame:
    """Read and explain one shard (either engine), adding the shard's place in the input to a
    bad-input error."""
    ids, items = reader.read(shard)
    try:
        return explainer.explain_rows(ids, items, shard.start, **options)
    except ValueError as error:
        raise InputError(f"{reader.path.name}, shard {shard.index} (rows {shard.start} to {shard.stop - 1}, ids "
                         f"{ids[0]!r} to {ids[-1]!r}): {error}. Finished shards are kept; after fixing the input, "
                         "run again with --no-resume (a changed input is a new run)") from error


def _progress(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="explain", unit="item", disable=not enabled, smoothing=0.1)


def _check_options(explainer: DomainExplainer, options: dict) -> None:
    unknown = sorted(set(options) - set(explainer.run_options))
    if unknown:
        raise InputError(f"a {explainer.kind} run takes no option {', '.join(map(repr, unknown))}; its options are "
                         f"{', '.join(sorted(explainer.run_options))}")
    explainer.check_options(options)


def explain_dataset(explainer: Any, source: str | Path, out_dir: str | Path, *, shard_size: int = 1000,
                    resume: bool = True, progress: bool = True, column: str = "text", engine: str = "local",
                    num_workers: int = 1, address: str | None = None, **options: Any) -> Path:
    """Explain every item (text, sequence record, cell...) of ``source`` into Parquet shards in ``out_dir``.

    ``explainer``: any explainer of :mod:`lrp_domains.domains` (or, for ``engine="ray"``,
    preferably a picklable factory returning one, called once per worker). ``options`` go to the
    explainer (its ``run_options``: ``target``, ``batch_size``; sequences: ``center``,
    ``rc_average``; genes: ``missing``). ``engine="ray"`` runs the same shards on ``num_workers`` Ray
    actors (joining ``address`` or ``RAY_ADDRESS`` if set, else a local cluster); a lost worker is
    replaced and its shard re-run (see :mod:`lrp_domains.run.ray_engine`).
    Returns the manifest's path.
    """
    factory: Callable[[], Any] | None = None
    if callable(explainer) and not isinstance(explainer, DomainExplainer):
        factory, explainer = explainer, explainer()
    if engine not in ("local", "ray"):
        raise InputError(f"engine must be 'local' or 'ray', got {engine!r}")
    if engine == "ray":
        from lrp_domains.run.ray_engine import require_ray

        require_ray()
    kind = kind_of(explainer)
    _check_options(explainer, options)
    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1, got {shard_size}")
    reader = explainer.reader(source, column)
    shards = reader.shards(shard_size)
    if not shards:
        raise InputError(f"{Path(source).name} holds no {explainer.item}s to explain ({kind} run: empty file, or no "
                         "records/rows)")
    writer = prepare(explainer, reader, shards, out_dir, resume, shard_size, column, options)
    todo = [shard for shard in shards if not writer.done(shard)]
    total = shards[-1].stop
    done_rows = total - sum(s.size for s in todo)
    with _progress(total, done_rows, progress) as bar:
        if engine == "local":
            for shard in todo:
                writer.write(shard, explain_shard(explainer, reader, shard, options))
                bar.update(shard.size)
        else:
            from lrp_domains.run.ray_engine import run_on_ray

            work = run_on_ray(factory or (lambda: explainer), reader, column, todo, options, num_workers, address)
            for shard, rows in work:
                writer.write(shard, rows)
                bar.update(shard.size)
    return Path(out_dir) / MANIFEST


def _manifest_or_error(out_dir: str | Path) -> dict[str, Any]:
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise FileNotFoundError(f"no {MANIFEST} in {out_dir}: not an explain_dataset output folder")
    return manifest


def read_results(out_dir: str | Path) -> pd.DataFrame:
    """All shards of a finished (or partial) run, in input order."""
    manifest = _manifest_or_error(out_dir)
    entries = sorted(manifest["shards"].values(), key=lambda e: e["start"])
    frames = [pd.read_parquet(Path(out_dir) / e["file"]) for e in entries]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def iter_shards(out_dir: str | Path) -> Iterator[pd.DataFrame]:
    """The shards of a run one at a time (constant memory), in input order."""
    manifest = _manifest_or_error(out_dir)
    for entry in sorted(manifest["shards"].values(), key=lambda e: e["start"]):
        yield pd.read_parquet(Path(out_dir) / entry["file"])
