"""The manifest of a run folder: what was explained, how, and which shards are done.

``manifest.json`` carries our schema marker (``"schema": "lrp-domains/run"``). A folder is ours
only when its manifest carries it: any other ``manifest.json`` (a web app's, a broken file, an
old format) is refused, with or without resume, and nothing in it is ever deleted. Shard entries
are only ever our own names (``shard-00000.parquet``) directly inside the folder.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lrp_domains.errors import InputError
from lrp_domains.files.writing import atomic_write

MANIFEST = "manifest.json"
SCHEMA = "lrp-domains/run"
VERSION = 3
SHARD_NAME = re.compile(r"shard-\d{5}\.parquet")


def shard_name(index: int) -> str:
    """The file name of shard ``index``."""
    return f"shard-{index:05d}.parquet"


def _refuse(path: Path, why: str) -> InputError:
    return InputError(
        f"{path} {why}; this folder does not hold an lrp-domains run. Choose another --out (a new "
        "folder), or move that manifest.json away"
    )


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a run folder; None when there is none; an InputError when the folder's
    ``manifest.json`` is not ours (no schema marker), is broken, or lists files that are not ours."""
    path = Path(out_dir) / MANIFEST
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file():
        raise _refuse(path, "is not a regular file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise _refuse(path, f"is not valid JSON ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise _refuse(path, f'has no lrp-domains schema marker ("schema": "{SCHEMA}")')
    if data.get("version") != VERSION:
        raise InputError(
            f"{path} was written by another version of lrp-domains (run format {data.get('version')}, "
            f"this one reads {VERSION}); start a new run in another folder"
        )
    shards = data.get("shards")
    if (
        not isinstance(shards, dict)
        or not isinstance(data.get("input"), dict)
        or not isinstance(data.get("settings"), dict)
    ):
        raise _refuse(path, "lacks the input, settings or shards of a run")
    for key, entry in shards.items():
        number = int(key) if key.isascii() and key.isdecimal() and len(key) <= 5 else -1
        if not isinstance(entry, dict) or entry.get("file") != shard_name(number) or number < 0:
            raise _refuse(path, f"lists {str(entry)[:80]!r} as shard {key[:20]!r}, which is not one of our shard files")
    return data


def finished_run(out_dir: str | Path, step: str) -> tuple[dict[str, Any], list[Path]]:
    """The manifest and the shard files (in input order) of a complete run, for a ``step`` that
    reads it (a bigWig, tfmodisco inputs, reference examples); an InputError for a folder that holds
    no run, or a run that is not complete (killed, stopped by an error, or still running)."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    if manifest is None:
        raise InputError(f"no {MANIFEST} in {out}: not an lrp-domains run folder (made by `lrp-domains run KIND`)")
    if not manifest.get("complete"):
        done, total = len(manifest["shards"]), manifest["input"]["shards"]
        raise InputError(
            f"{out} holds an incomplete run ({done} of {total} shards); {step} reads complete runs only: "
            "run the same `lrp-domains run` command again to finish it (finished shards are kept)"
        )
    entries = sorted(manifest["shards"].values(), key=lambda e: e["start"])
    return manifest, [out / entry["file"] for entry in entries]


@contextlib.contextmanager
def step_output(out_dir: str | Path, path: str | Path) -> Iterator[Path]:
    """Where a step writes ``path`` (its result: ``ohe.npy``, ``reference_examples.tsv``...).

    Inside the run folder the step holds the folder's lock, refuses a file of that name that the
    run did not write (not listed under the manifest's ``outputs``), and lists the file there once
    written (a new run with ``--no-resume`` deletes it with the shards). A path outside the run
    folder is the user's explicit choice, written atomically."""
    from lrp_domains.files.lock import folder_lock

    out, target = Path(out_dir).resolve(), Path(path)
    if target.is_dir():
        raise InputError(f"{target} is a folder; give a file name for the step's output")
    if target.resolve().parent != out:
        yield target
        return
    with folder_lock(out):
        manifest = read_manifest(out) or {}
        listed = manifest.get("outputs", [])
        if (target.exists() or target.is_symlink()) and target.name not in listed:
            raise InputError(
                f"{target} exists and was not written by this run (not listed in its {MANIFEST}); not "
                "replacing it: move it away, or give the output another name"
            )
        yield target
        current = read_manifest(out)  # read again: a nested step may have listed its own file
        if current is not None and target.name not in current.get("outputs", []):
            current["outputs"] = sorted({*current.get("outputs", []), target.name})
            write_manifest(out, current)


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically."""
    atomic_write(out_dir / MANIFEST, json.dumps(manifest, indent=1))


def new_manifest(fingerprint: dict[str, Any], settings: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
    """A manifest with no shards done yet."""
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "input": fingerprint,
        "settings": settings,
        "versions": versions,
        "shards": {},
        "complete": False,
    }


def _shown(value: Any, start: int, width: int = 70) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    if len(text) <= width:
        return text
    begin = max(0, min(start - 10, len(text) - width))
    return ("..." if begin else "") + text[begin : begin + width] + ("..." if begin + width < len(text) else "")


def _first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``"settings.composite: 'genomics' before, 'epsilon' now"`` for each value that differs.

    Dicts and lists of equal length are compared entry by entry (``settings.rules.rules[2][1]``),
    so the path names the part that differs; long values are shown from where they differ."""
    found: list[str] = []
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                side = "now" if key in new else "before"
                found.append(f"{path}: only {side} ({_shown(old.get(key, new.get(key)), 0)})")
            else:
                found.extend(differences(old[key], new[key], path))
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new)):
            found.extend(differences(a, b, f"{prefix}[{index}]"))
        return found
    if old != new:
        texts = [json.dumps(v) if not isinstance(v, str) else repr(v) for v in (old, new)]
        at = _first_difference(*texts)
        found.append(f"{prefix}: {_shown(old, at)} before, {_shown(new, at)} now")
    return found
