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
from collections.abc import Iterator
from pathlib import Path

from lrp_domains.errors import InputError

#: The schema marker of an output folder's list of files.
OUTPUTS_SCHEMA = "lrp-domains/outputs"
OUTPUTS_FILE = "lrp-domains.json"
#: What our reports write; a listed file of another kind is never deleted.
OUTPUT_SUFFIXES = (".html", ".png", ".csv", ".tsv", ".parquet", ".npz", ".npy", ".json", ".bed", ".h5ad", ".txt",
                   ".bw")


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
    """A folder our reports write into (see the module docstring); call :meth:`finish` at the end."""

    def __init__(self, path: str | Path, kind: str) -> None:
        self.root = prepare_folder(path)
        self.kind = kind
        self.written: list[str] = []
        self.previous = self._previous()

    def _previous(self) -> list[str]:
        marker = self.root / OUTPUTS_FILE
        if not marker.is_file() or marker.is_symlink():
            return []
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            return []
        if not isinstance(data, dict) or data.get("schema") != OUTPUTS_SCHEMA \
                or not isinstance(data.get("files"), list):
            return []
        return [name for name in data["files"]
                if isinstance(name, str) and self._inside(name) and name.lower().endswith(OUTPUT_SUFFIXES)]

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

    def path(self, name: str) -> Path:
        """Where to write ``name`` (relative to the folder), registered as ours; sub-folders are
        made, and a sub-folder that is a symlink is refused."""
        if not self._inside(name):
            raise ValueError(f"{name!r} is not a path inside the output folder")
        target = self.root / name
        current = self.root
        for part in Path(name).parts[:-1]:
            current = current / part
            if current.is_symlink():
                raise InputError(f"{current} is a symlink; not writing through it (remove it, or choose another "
                                 "output folder)")
            current.mkdir(exist_ok=True)
        if name not in self.written:
            self.written.append(name)
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
        """Delete the files an earlier report listed and this one did not write again; list ours."""
        for name in self.previous:
            if name in self.written or not self._no_symlinked_folder(name):
                continue
            stale = self.root / name
            if stale.is_symlink() or stale.is_file():
                stale.unlink()
        marker = {"schema": OUTPUTS_SCHEMA, "kind": self.kind, "files": sorted(self.written)}
        return atomic_write(self.root / OUTPUTS_FILE, json.dumps(marker, indent=1))
