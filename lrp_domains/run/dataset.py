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

import errno
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lrp_domains.core.describe import describe, describe_composite
from lrp_domains.core.engine.finite import NonFiniteOutputs
from lrp_domains.domains import NON_FINITE, OK, STATUS, DomainExplainer, Reader, Unusable, kind_of
from lrp_domains.errors import InputError
from lrp_domains.files.formats import Shard
from lrp_domains.files.lock import folder_lock
from lrp_domains.files.writing import OUTPUT_SUFFIXES, OUTPUTS_FILE, read_marker
from lrp_domains.models import model_fingerprint
from lrp_domains.options import parse_options
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


def settings_of(explainer: DomainExplainer, shard_size: int, column: str | None, options: dict) -> dict[str, Any]:
    """What must match for two runs to share an output folder (the domain adds its own)."""
    settings = {
        "kind": explainer.kind,
        "explainer": f"{type(explainer).__module__}.{type(explainer).__qualname__}",
        "composite": explainer.composite.name,
        "rules": describe_composite(explainer.composite),
        "model": model_fingerprint(explainer.model),
        "shard_size": shard_size,
        "column": column,
        "options": {k: v for k, v in sorted(options.items()) if k != "batch_size"},
    }
    domain = explainer.settings()
    clash = sorted(set(domain) & set(settings))
    if clash:
        raise TypeError(f"{type(explainer).__name__}.settings() may not redefine {clash}: the run sets those")
    settings.update(domain)
    # As JSON data (tuples become lists, objects their class and parameters), so that the settings
    # compare equal to the ones another process wrote to the manifest.
    return json.loads(json.dumps(describe(settings)))


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
        try:
            # Plain Arrow types, no pandas metadata: shards read back alike from either engine.
            table = pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata(None)
            pq.write_table(table, temporary)
            os.replace(temporary, self.out_dir / name)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise storage_error(error, self.out_dir, f"writing {name}") from error
        entry = {"file": name, "rows": len(rows), "start": shard.start}
        if STATUS in rows:
            entry["not_ok"] = int((rows[STATUS] != OK).sum())
            if entry["not_ok"]:
                entry["statuses"] = {str(k): int(v) for k, v in rows[STATUS][rows[STATUS] != OK].value_counts().items()}
        self.manifest["shards"][str(shard.index)] = entry
        self.manifest["complete"] = len(self.manifest["shards"]) == self.manifest["input"]["shards"]
        try:
            write_manifest(self.out_dir, self.manifest)
        except OSError as error:
            raise storage_error(error, self.out_dir, f"writing {MANIFEST}") from error


def storage_error(error: OSError, out: Path, doing: str) -> InputError:
    """A file-system failure (full disk, quota, read-only, no permission) as one line that says
    what was kept and what to do."""
    reason = error.strerror or str(error)
    hints: dict[int | None, str] = {  # errno is None for errors raised without one
        errno.ENOSPC: "free some space",
        errno.EDQUOT: "free some of your quota",
        errno.EROFS: "choose a folder on a writable file system",
        errno.EACCES: "choose a folder you can write to",
        errno.EPERM: "choose a folder you can write to",
    }
    hint = hints.get(error.errno, "check the disk")
    return InputError(
        f"{out}: {reason} while {doing}. Finished shards are kept; {hint}, then run the same command again to resume"
    )


class RunMismatch(InputError):
    """The output folder holds a run of other input or settings."""


def _refuse_changed(out: Path, found: list[str]) -> InputError:
    shown = "; ".join(found[:8]) + (f"; and {len(found) - 8} more" if len(found) > 8 else "")
    return RunMismatch(
        f"{out} holds a run with other input or settings; not mixing them. Differences: {shown}. Use "
        "another --out for the new run (or --no-resume to replace this run's shards)"
    )


def _check_folder(out: Path) -> dict | None:
    """What can be checked without writing: the folder is a folder, holds no report, and its
    manifest (if any) is ours. Returns that manifest."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder (new, or one holding an earlier run to resume)")
    if not out.is_dir():
        return None
    marker = read_marker(out)
    if marker is not None:
        raise InputError(
            f"{out} holds a {marker.get('kind', '')} report ({OUTPUTS_FILE}); a folder holds one kind of "
            "output: write the run into another folder (--out)"
        )
    return read_manifest(out)


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{out}: cannot create this folder ({error.strerror}); choose another --out") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"{out}: this folder is not writable; choose another --out")


def _changes(existing: dict, fingerprint: dict, settings: dict) -> list[str]:
    found = differences(
        {"input": existing["input"], "settings": existing["settings"]}, {"input": fingerprint, "settings": settings}
    )
    return [d for d in found if not d.startswith("input.path")]


def prepare(out_dir: str | Path, resume: bool, fingerprint: dict, settings: dict) -> ShardWriter:
    """Check or start the manifest (refusing folders that are not ours); clean our stale temporary
    files; return the writer. The caller holds the folder's lock."""
    out = Path(out_dir)
    existing = _check_folder(out)
    # Only our own leftovers: the folder may hold the user's files too.
    for stale in [*out.glob("shard-*.parquet.tmp"), *out.glob(f".{MANIFEST}.*.tmp")]:
        if stale.is_symlink() or stale.is_file():
            stale.unlink()
    taken = [p.name for p in out.glob("shard-*.parquet*") if p.is_dir() and not p.is_symlink()]
    if taken:
        raise InputError(
            f"{out} holds folders named like our shards ({', '.join(sorted(taken)[:3])}); move them, "
            "or choose another --out"
        )
    if existing is not None and resume:
        found = _changes(existing, fingerprint, settings)
        if found:
            raise _refuse_changed(out, found)
        return ShardWriter(out, existing)
    if existing is not None:  # read_manifest let through only our own shard names
        replaced = [entry["file"] for entry in existing["shards"].values()]
        replaced += [
            name
            for name in existing.get("outputs", [])
            if isinstance(name, str) and Path(name).name == name and name.lower().endswith(OUTPUT_SUFFIXES)
        ]  # the steps' files, made from the replaced shards
        for name in replaced:
            old = out / name
            if old.is_symlink() or old.is_file():
                old.unlink()
    manifest = new_manifest(fingerprint, settings, _versions())
    try:
        write_manifest(out, manifest)
    except OSError as error:
        raise storage_error(error, out, f"writing {MANIFEST}") from error
    return ShardWriter(out, manifest)


def explain_shard(explainer: DomainExplainer, reader: Reader, shard: Shard, options: dict) -> pd.DataFrame:
    """Read and explain one shard (either engine), adding the shard's place in the input to a
    bad-input error."""
    ids, items = reader.read(shard)
    try:
        return explainer.explain_rows(ids, items, shard.start, **options)
    except ValueError as error:
        raise InputError(
            f"{reader.path.name}, shard {shard.index} (rows {shard.start} to {shard.stop - 1}, ids "
            f"{ids[0]!r} to {ids[-1]!r}): {error}. Finished shards are kept; after fixing the input, "
            "run again with --no-resume (a changed input is a new run)"
        ) from error


def probe(explainer: DomainExplainer, reader: Reader, shard: Shard, options: dict) -> None:
    """Explain the input's first item before the folder is touched: the options and the target
    are checked against the model itself (a class index the model does not have, a target its
    heads do not offer, an input it cannot take) while nothing is written."""
    ids, items = reader.read(shard)
    usable = (
        [i for i, item in enumerate(items) if not isinstance(item, Unusable)]
        if isinstance(items, (list, tuple))
        else [0]
    )
    if not usable:  # nothing in the first shard the model can take: its rows will say why
        return
    first = usable[0]
    try:
        with warnings.catch_warnings():  # the run says it again, for every row it concerns
            warnings.simplefilter("ignore")
            explainer.explain_rows(ids[first : first + 1], items[first : first + 1], shard.start + first, **options)
    except ValueError as error:
        raise InputError(
            f"{reader.path.name}, row {shard.start + first} (id {ids[first]!r}): {error}. Nothing was written"
        ) from error
    except RuntimeError as error:  # a model that cannot take this input at all
        said = " ".join(str(error).split())[:300]
        raise InputError(
            f"{reader.path.name}, row {shard.start + first} (id {ids[first]!r}): the model fails on this "
            f"input ({type(error).__name__}: {said}). Nothing was written; check that --model fits this "
            "input"
        ) from error


def _progress(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="explain", unit="item", disable=not enabled, smoothing=0.1)


def _check_options(explainer: DomainExplainer, options: dict) -> dict:
    """The options converted to their declared types, and checked by the explainer."""
    parsed = parse_options(explainer, options)
    explainer.check_options(parsed)
    return parsed


def explain_dataset(
    explainer: Any,
    source: str | Path,
    out_dir: str | Path,
    *,
    shard_size: int = 1000,
    resume: bool = True,
    progress: bool = True,
    column: str | None = None,
    engine: str = "local",
    num_workers: int = 1,
    address: str | None = None,
    replace_other: bool = False,
    **options: Any,
) -> Path:
    """Explain every item (text, sequence record, cell...) of ``source`` into Parquet shards in ``out_dir``.

    ``explainer``: any explainer of :mod:`lrp_domains.domains` (or, for ``engine="ray"``,
    preferably a picklable factory returning one, called once per worker). ``options`` go to the
    explainer (its ``run_options``: ``target``, ``batch_size``; sequences: ``center``,
    ``rc_average``; genes: ``missing``), typed as it declares them (:mod:`lrp_domains.options`).
    ``replace_other``: a folder holding a run of other input or settings is started over (with a
    warning naming the differences) instead of refused; for the convenience commands, whose run
    lives inside their own report folder. ``engine="ray"`` runs the same shards on ``num_workers``
    Ray actors (joining ``address`` or ``RAY_ADDRESS`` if set, else a local cluster); a lost worker
    is replaced and its shard re-run (see :mod:`lrp_domains.run.ray_engine`).

    Before the folder is touched, the options are checked and the first item is explained (so a
    target the model does not have is refused while nothing is written). The folder is locked for
    the run (:mod:`lrp_domains.files.lock`): a second writer is refused. Rows whose output or
    relevance is not finite get ``status`` ``"non-finite"`` and are counted in one warning; a run
    where every row is non-finite fails. Returns the manifest's path.
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
    options = _check_options(explainer, options)
    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1, got {shard_size}")
    out = Path(out_dir)
    existing = _check_folder(out)
    reader = explainer.reader(source, column)
    shards = reader.shards(shard_size)
    if not shards:
        raise InputError(
            f"{Path(source).name} holds no {explainer.item}s to explain ({kind} run: empty file, or no records/rows)"
        )
    identity = reader.fingerprint() if hasattr(reader, "fingerprint") else file_fingerprint(reader.path)
    fingerprint = dict(identity, rows=shards[-1].stop, shards=len(shards))
    settings = settings_of(explainer, shard_size, column, options)
    changed = _changes(existing, fingerprint, settings) if existing is not None and resume else []
    if changed and replace_other:
        warnings.warn(
            f"{out} held a run of other input or settings ({'; '.join(changed[:3])}); starting it over",
            UserWarning,
            stacklevel=2,
        )
        resume = False
    if existing is None or not resume:
        probe(explainer, reader, shards[0], options)
    elif changed:  # refused before the folder is touched
        raise _refuse_changed(out, changed)
    # (a run resumed with the same settings had its options and target checked when it started)
    _make_folder(out)
    with folder_lock(out):
        writer = prepare(out, resume, fingerprint, settings)
        todo = [shard for shard in shards if not writer.done(shard)]
        total = shards[-1].stop
        done_rows = total - sum(s.size for s in todo)
        with _progress(total, done_rows, progress) as bar:
            if engine == "local":
                explain_local(explainer, reader, todo, options, writer, bar.update)
            else:
                from lrp_domains.run.ray_engine import run_on_ray

                work = run_on_ray(factory or (lambda: explainer), reader, column, todo, options, num_workers, address)
                for shard, rows in work:
                    writer.write(shard, rows)
                    bar.update(shard.size)
        _report_not_ok(writer.manifest, explainer, out)
    return out / MANIFEST


def explain_local(
    explainer: DomainExplainer,
    reader: Reader,
    shards: list[Shard],
    options: dict,
    writer: ShardWriter,
    done: Callable[[int], Any] = lambda rows: None,
) -> None:
    """Explain ``shards`` in order in this process, each written (and ``done`` called with its row
    count) by one writer thread while the next is explained: converting and compressing a shard
    then overlaps the model's work on the next one (on a GPU, as long as the compute itself, for
    a 2,114 bp BPNet). One shard at most waits to be written, and shards are written in order. A
    failure stops the run only after the shard being written is written: what was finished is
    complete and listed; a storage failure of an earlier shard is raised before a later
    explanation's error."""
    from concurrent.futures import ThreadPoolExecutor

    def write(shard: Shard, rows: pd.DataFrame) -> None:
        writer.write(shard, rows)
        done(shard.size)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lrp-domains-writer") as pool:
        pending = None
        try:
            for shard in shards:
                rows = explain_shard(explainer, reader, shard, options)
                if pending is not None:
                    pending.result()  # the shard before is written (its failure raised here)
                pending = pool.submit(write, shard, rows)
        except BaseException:
            earlier = pending.exception() if pending is not None else None  # waits for the write
            if earlier is not None:
                raise earlier from None
            raise
        if pending is not None:
            pending.result()


def _report_not_ok(manifest: dict, explainer: DomainExplainer, out: Path) -> None:
    """One warning counting the rows that are not ``ok``; an error when no row is."""
    entries = manifest["shards"].values()
    bad = sum(int(entry.get("not_ok", 0)) for entry in entries)
    total = sum(int(entry["rows"]) for entry in entries)
    if not bad:
        return
    statuses: dict[str, int] = {}
    for entry in entries:
        for status, count in entry.get("statuses", {}).items():
            statuses[status] = statuses.get(status, 0) + count
    if bad == total and set(statuses) == {NON_FINITE}:  # the model, not the input: nothing usable at all
        raise NonFiniteOutputs(total, f"{explainer.item}s of {out}").naming(explainer.model)
    shown = ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
    warnings.warn(
        f"{out}: {bad} of {total} rows have a status other than ok ({shown}; the status column says which); "
        "they are kept, marked, and left out by the steps that read the run",
        UserWarning,
        stacklevel=3,
    )


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
