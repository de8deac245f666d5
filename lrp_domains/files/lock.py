"""One writer per output folder: ``lrp-domains.lock``, holding the writer's process id and host.

A run or a report takes the folder's lock before it writes anything and gives it back when it
ends. A second writer (another process, on this machine or another one sharing the folder) is
refused in one line that names the holder. A lock left behind by a killed process is recognised
and taken over: the file is also locked with ``fcntl.flock``, which the operating system releases
when its process dies, so a lock file nobody holds is stale whatever process id it names; where
``flock`` is missing (Windows), a lock naming a process of this host that no longer runs is
stale.

Within one process the lock is re-entrant: a command that holds a folder's lock can call a report
writer that takes it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lrp_domains.errors import InputError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "lrp-domains.lock"

_held: dict[Path, tuple[int, int]] = {}  # folder -> (file descriptor, depth), this process's locks
_guard = threading.Lock()


class FolderLocked(InputError):
    """Another writer holds the folder."""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _holder(info: dict[str, Any]) -> str:
    pid, host = info.get("pid", "?"), info.get("host", "?")
    what = f" ({info['command']})" if info.get("command") else ""
    since = f", since {info['since']}" if info.get("since") else ""
    return f"process {pid} on {host}{what}{since}"


def _refuse(folder: Path, info: dict[str, Any]) -> FolderLocked:
    return FolderLocked(
        f"{folder} is being written by {_holder(info)}; one writer per folder: wait for it to end, or "
        f"choose another --out (if that process is gone, delete {folder / LOCK_FILE})"
    )


def _try_flock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without flock: fall back on the process id
        return True
    return True


def _acquire(folder: Path) -> int:
    path = folder / LOCK_FILE
    if path.is_symlink():
        raise InputError(f"{path} is a symlink; not writing through it (remove it, or choose another --out)")
    for _ in range(20):  # retried only when the file was replaced under us
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise InputError(f"{folder}: cannot write there ({error.strerror}); choose another --out") from None
        if fcntl is not None:
            if not _try_flock(descriptor):
                info = _read(path)
                os.close(descriptor)
                raise _refuse(folder, info)
            try:  # the holder may have removed the file between our open and our flock
                same = os.fstat(descriptor).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(descriptor)
                continue
        else:
            info = _read(path)
            if (
                info
                and (info.get("host") != socket.gethostname() or _alive(int(info.get("pid", 0))))
                and info.get("pid") != os.getpid()
            ):
                os.close(descriptor)
                raise _refuse(folder, info)
        mine = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200] if sys.argv else "",
        }
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps(mine).encode())
        return descriptor
    raise InputError(f"{folder}: could not take {LOCK_FILE} (it keeps being replaced); is another writer busy there?")


def _release(folder: Path, descriptor: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        (folder / LOCK_FILE).unlink()
    os.close(descriptor)


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block (the folder must exist). Re-entrant within a process;
    a :class:`FolderLocked` error (an InputError) when another writer holds it."""
    key = Path(folder).resolve()
    with _guard:
        if key in _held:
            descriptor, depth = _held[key]
            _held[key] = (descriptor, depth + 1)
        else:
            _held[key] = (_acquire(key), 1)
    try:
        yield key / LOCK_FILE
    finally:
        with _guard:
            descriptor, depth = _held[key]
            if depth > 1:
                _held[key] = (descriptor, depth - 1)
            else:
                del _held[key]
                _release(key, descriptor)


def holds_lock(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return Path(folder).resolve() in _held
