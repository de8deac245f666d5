"""Writing outputs safely: atomically, never through a symlink, deleting only our own files.

- :func:`atomic_path` / :func:`atomic_write`: write to a temporary name beside the target and
  rename it over the target when complete. ``os.replace`` replaces a symlink itself, never the file
  it points to, and an interrupted write leaves the old file whole.
- :class:`OutputFolder`: a report folder. It lists what it wrote in ``lrp-domains.json`` (with our
  schema marker); the next report into the same folder replaces those files and deletes the ones
  it did not write again (stale pages and logos of an earlier run), and nothing else: files we did
  not write, and files outside the folder, are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lrp_domains.errors import InputError

#: The schema marker of an output folder's list of files.
OUTPUTS_SCHEMA = "lrp-domains/outputs"
OUTPUTS_FILE = "lrp-domains.json"
#: What our reports write; a listed file of another kind is never deleted.
OUTPUT_SUFFIXES = (".html", ".png", ".csv", ".tsv", ".parquet", ".npz", ".npy", ".json", ".bed", ".h5ad", ".txt", ".bw")


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


class PendingFile:
    """A file written over time under a temporary name beside ``path``: :meth:`commit` renames it
    into place, :meth:`discard` removes it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.temporary = _temporary(self.path)

    def commit(self) -> Path:
        os.replace(self.temporary, self.path)
        return self.path

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` on success,
    removed on failure."""
    pending = PendingFile(path)
    try:
        yield pending.temporary
        pending.commit()
    except BaseException:
        pending.discard()
        raise


def atomic_write(path: str | Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    path = Path(path)
    with atomic_path(path) as temporary:
        if isinstance(data, str):
            temporary.write_text(data, encoding=encoding)
        else:
            temporary.write_bytes(data)
    return path


def prepare_folder(path: str | Path, what: str = "output") -> Path:
    """Create the folder ``path`` (parents too); an InputError when it is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file; give a folder for the {what} (new, or one holding an earlier {what})")
    path.mkdir(parents=True, exist_ok=True)
    return path


class OutputFolder:
    """A folder our reports write into (see the module docstring); call :meth:`finish` at the end.

    One writer and one kind per folder: the folder's lock (:mod:`lrp_domains.files.lock`) is held
    from the first file written until :meth:`finish` (or :meth:`close`); a folder holding another
    kind of report, or a run, is refused; a file we are about to write that exists and is not
    listed as ours is refused, naming it. The list of files is written as ``"incomplete"`` before
    the first file and grows before each new name is written, so it always covers every file of
    ours on disk; :meth:`finish` writes it ``"complete"``. A report killed half-way leaves an
    incomplete list, and the next report into the folder repairs it: it replaces or deletes every
    file listed there. Readers refuse an incomplete folder (:func:`read_outputs`).
    """

    def __init__(self, path: str | Path, kind: str) -> None:
        self.root = prepare_folder(path)
        self.kind = kind
        self.written: list[str] = []
        self._lock: contextlib.AbstractContextManager | None = None
        self._take_lock()
        try:
            refuse_run_folder(self.root, f"a {kind} report")
            marker = read_marker(self.root)
            if marker is not None and marker.get("kind") not in (None, kind):
                raise InputError(
                    f"{self.root} holds a {marker['kind']} report ({OUTPUTS_FILE}); a folder holds one "
                    f"kind of output: write the {kind} report into another folder (--out)"
                )
            self.previous = _our_names(marker, self._inside)
            self._remove_our_temporaries()
        except BaseException:
            self.close()
            raise
        self._marked: set[str] | None = None  # names the incomplete marker lists, once written

    def _take_lock(self) -> None:
        from lrp_domains.files.lock import folder_lock

        self._lock = folder_lock(self.root)
        self._lock.__enter__()

    def close(self) -> None:
        """Give the folder's lock back without finishing (the marker stays incomplete)."""
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.__exit__(None, None, None)

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        """Finish on success; on an exception give the lock back, leaving the marker incomplete."""
        if error is None and self._lock is not None:
            self.finish()
        else:
            self.close()

    def __del__(self) -> None:  # a report stopped by an exception never finishes: its lock goes back here
        self.close()

    def _remove_our_temporaries(self) -> None:
        for name in self.previous:
            if not self._no_symlinked_folder(name):
                continue
            target = self.root / name
            for stale in target.parent.glob(f".{target.name}.*.tmp"):
                if stale.is_file() and not stale.is_symlink():
                    stale.unlink()

    def _inside(self, name: str) -> bool:
        relative = Path(name)
        return not relative.is_absolute() and ".." not in relative.parts and name not in ("", ".", OUTPUTS_FILE)

    def _no_symlinked_folder(self, name: str) -> bool:
        """True when no folder between the root and ``name`` is a symlink (so ``name`` is inside)."""
        current = self.root
        for part in Path(name).parts[:-1]:
            current = current / part
            if current.is_symlink() or not current.is_dir():
                return False
        return True

    def _write_marker(self, state: str, files: list[str]) -> None:
        marker = {"schema": OUTPUTS_SCHEMA, "kind": self.kind, "state": state, "files": sorted(set(files))}
        atomic_write(self.root / OUTPUTS_FILE, json.dumps(marker, indent=1))

    def expect(self, names: list[str]) -> None:
        """Refuse, before anything is written, names that exist in the folder and are not ours."""
        foreign = [
            name
            for name in names
            if name not in self.previous
            and name not in self.written
            and ((self.root / name).exists() or (self.root / name).is_symlink())
        ]
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise InputError(
                f"{self.root} holds {shown}, which lrp-domains did not write (not listed in "
                f"{OUTPUTS_FILE}); not replacing them: move them away, or choose another --out"
            )

    def path(self, name: str) -> Path:
        """Where to write ``name`` (relative to the folder), registered as ours; sub-folders are
        made, and a sub-folder that is a symlink is refused, as is an existing file that is not ours."""
        if not self._inside(name):
            raise ValueError(f"{name!r} is not a path inside the output folder")
        if self._lock is None:
            raise RuntimeError(f"{self.root}: this OutputFolder is finished or closed")
        self.expect([name])
        target = self.root / name
        current = self.root
        for part in Path(name).parts[:-1]:
            current = current / part
            if current.is_symlink():
                raise InputError(
                    f"{current} is a symlink; not writing through it (remove it, or choose another output folder)"
                )
            current.mkdir(exist_ok=True)
        if name not in self.written:
            self.written.append(name)
        if self._marked is None or name not in self._marked:
            # Listed before it is written: a kill between the two leaves nothing of ours unlisted.
            self._marked = set(self.previous) | set(self.written)
            self._write_marker("incomplete", sorted(self._marked))
        return target

    @contextlib.contextmanager
    def atomic(self, name: str) -> Iterator[Path]:
        """A temporary path for ``name``'s content, renamed into place when the block succeeds."""
        with atomic_path(self.path(name)) as temporary:
            yield temporary

    def write_text(self, name: str, text: str) -> Path:
        """Write a text file atomically."""
        return atomic_write(self.path(name), text)

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write a binary file atomically."""
        return atomic_write(self.path(name), data)

    def finish(self) -> Path:
        """Delete the files an earlier report listed and this one did not write again; list ours
        as complete; give the lock back."""
        try:
            for name in self.previous:
                if name in self.written or not self._no_symlinked_folder(name):
                    continue
                stale = self.root / name
                if stale.is_symlink() or stale.is_file():
                    stale.unlink()
            self._write_marker("complete", self.written)
        finally:
            self.close()
        return self.root / OUTPUTS_FILE


@contextlib.contextmanager
def claim_folder(path: str | Path, kind: str, names: Sequence[str] = ()) -> Iterator[Path]:
    """Hold a report folder for a whole command, before its work starts: the folder is made and
    locked (a second writer is refused at once, not after its work), another kind of output is
    refused, and so are ``names`` the command will write that exist and are not ours. The report
    writer called inside opens its :class:`OutputFolder` on the same lock. A folder made here that
    is still empty when the block fails is removed."""
    path = Path(path)
    created = not path.exists()
    try:
        folder = OutputFolder(path, kind)
    except BaseException:
        if created:
            _remove_if_empty(path)
        raise
    try:
        folder.expect(list(names))
        yield folder.root
    except BaseException:
        folder.close()
        if created:
            _remove_if_empty(path)
        raise
    folder.close()


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()


def read_marker(folder: str | Path) -> dict | None:
    """The report marker (``lrp-domains.json``) of ``folder``; None when there is none; an
    InputError when a file of that name is not ours (no schema marker, broken, not a file)."""
    path = Path(folder) / OUTPUTS_FILE
    if not path.exists() and not path.is_symlink():
        return None
    refuse = f"{path} is not an lrp-domains report list (%s); not replacing it: move it away, or choose another --out"
    if path.is_symlink() or not path.is_file():
        raise InputError(refuse % "not a regular file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise InputError(refuse % f"not valid JSON: {type(error).__name__}") from None
    if not isinstance(data, dict) or data.get("schema") != OUTPUTS_SCHEMA:
        raise InputError(refuse % f'no schema marker "{OUTPUTS_SCHEMA}"')
    return data


def _our_names(marker: dict | None, inside: Any) -> list[str]:
    if marker is None or not isinstance(marker.get("files"), list):
        return []
    return [
        name
        for name in marker["files"]
        if isinstance(name, str) and inside(name) and name.lower().endswith(OUTPUT_SUFFIXES)
    ]


def refuse_run_folder(folder: Path, what: str) -> None:
    """An InputError when ``folder`` holds an lrp-domains run (its ``manifest.json`` carries our run
    schema): a folder holds one kind of output."""
    manifest = folder / "manifest.json"
    if not manifest.is_file() or manifest.is_symlink():
        return
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return
    if isinstance(data, dict) and data.get("schema") == "lrp-domains/run":
        raise InputError(
            f"{folder} holds an lrp-domains run (manifest.json); a folder holds one kind of output: "
            f"write {what} into another folder (--out)"
        )


def read_outputs(folder: str | Path) -> dict:
    """The marker of a finished report folder: an InputError when there is none, or when the report
    was not written to the end (``"state": "incomplete"``: killed, or stopped by an error)."""
    marker = read_marker(folder)
    if marker is None:
        raise InputError(f"{folder} holds no lrp-domains report ({OUTPUTS_FILE} is missing)")
    if marker.get("state", "complete") != "complete":
        raise InputError(
            f"{folder} holds an incomplete {marker.get('kind', '')} report (it was stopped before the "
            "end); write the report again into this folder to repair it"
        )
    return marker
