"""The report of a finished run: its rows read shard by shard, the domain's results rebuilt from
them (:meth:`~lrp_domains.domains.DomainExplainer.result_from_rows`) and written by the domain's
report writer. One pipeline per job: the convenience commands (``bio sequences``, ``bio genes``)
are a run and this step, so their reports show exactly the run's rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from lrp_domains import domains
from lrp_domains.errors import InputError
from lrp_domains.report import write_report
from lrp_domains.run.manifest import finished_run

__all__ = ["read_run", "report_run"]


def read_run(run_dir: str | Path, step: str = "the report") -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """``(manifest, rows with status ok, the other rows)`` of a complete run, read shard by shard."""
    manifest, files = finished_run(run_dir, step)
    frames = [pd.read_parquet(path) for path in files]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if "status" not in rows:
        return manifest, rows, rows.iloc[:0]
    usable = rows["status"] == "ok"
    return manifest, rows[usable].reset_index(drop=True), rows[~usable].reset_index(drop=True)


def left_out_note(others: pd.DataFrame, item: str = "records") -> str | None:
    """A sentence naming the rows a report leaves out, and why (their status)."""
    if not len(others):
        return None
    counts = others["status"].value_counts()
    shown = ", ".join(f"{status} {count}" for status, count in counts.items())
    names = ", ".join(map(str, others["id"].head(8))) + (", ..." if len(others) > 8 else "")
    return f"{len(others)} {item} of the run are left out (status {shown}): {names}."


def report_run(
    run_dir: str | Path, out_dir: str | Path, notes: tuple[str, ...] | list[str] = (), **kwargs: Any
) -> dict[str, Path]:
    """Write the report of the finished run in ``run_dir`` into ``out_dir`` (another folder: a
    folder holds one kind of output); ``kwargs`` go to the domain's report writer (sequences:
    ``motifs``; genes: ``markers``, ``adata``, ``groupby``, ``top``). Rows whose status is not
    ``ok`` are left out and named in a note."""
    manifest, rows, others = read_run(run_dir)
    kind = manifest["settings"].get("kind")
    explainer = domains.get(str(kind))
    if not len(rows):
        raise InputError(f"{run_dir}: no row of the run has status ok (see its status column); nothing to report")
    result = explainer.result_from_rows(rows, manifest["settings"])
    note = left_out_note(others, explainer.item + "s")
    accepted = _parameters(explainer)
    refused = sorted(name for name in kwargs if name not in accepted)
    if refused:
        raise InputError(f"the {kind} report takes no {', '.join(refused)}; it takes {', '.join(sorted(accepted))}")
    context = {name: value for name, value in explainer.report_context(manifest).items() if name in accepted}
    return write_report(explainer, result, out_dir, **{**context, **kwargs}, notes=[*notes, *([note] if note else [])])


def _parameters(explainer: Any) -> set[str]:
    """The keyword arguments the domain's report writer takes (besides the result and folder)."""
    import importlib
    import inspect

    module, _, function = str(explainer.report).partition(":")
    writer = getattr(importlib.import_module(module), function)
    return set(list(inspect.signature(writer).parameters)[2:]) - {"notes"}
