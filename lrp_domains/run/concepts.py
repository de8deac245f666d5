"""Relevance maximization over a dataset run (Concept Relevance Propagation's reference
examples, Achtibat et al. 2023, Sec. "Relevance maximization"): for each concept (a channel of a
layer), the records where it receives the most relevance, and its share of all relevance.

Reads the ``concepts`` column a domain writes when a run is given a layer (sequences:
``--option concepts=LAYER``), shard by shard: memory is ``top x channels`` whatever the run's size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lrp_domains.errors import InputError
from lrp_domains.run.dataset import iter_shards
from lrp_domains.run.manifest import finished_run

__all__ = ["reference_examples"]


def reference_examples(out_dir: str | Path, top: int = 5, column: str = "concepts") -> pd.DataFrame:
    """The ``top`` records per concept with the largest concept relevance over a run: columns
    concept, rank (0 first), id, row (the record's row in the input), relevance, and share (the
    concept's relevance summed over all records, over all concepts' sum)."""
    if top < 1:
        raise InputError(f"top must be >= 1, got {top}")
    best_values: np.ndarray | None = None  # (top', C) running maxima, with their rows
    best_rows: np.ndarray | None = None
    names: dict[int, str] = {}
    totals: np.ndarray | None = None
    finished_run(out_dir, "reference-examples")
    for shard in iter_shards(out_dir):
        if "status" in shard:
            shard = shard[shard["status"] == "ok"]  # rows whose numbers are not finite are left out
        if column not in shard:
            raise InputError(f"{out_dir}: the run has no {column!r} column (run it with --option {column}=LAYER)")
        lists = [value for value in shard[column] if value is not None and len(value)]
        if not lists:
            continue
        if len(lists) != len(shard):
            raise InputError(f"{out_dir}: some records have no {column} values; the run mixes settings")
        values = np.asarray(np.stack([np.asarray(v, dtype=float) for v in shard[column]]))
        rows = shard["row"].to_numpy()
        names.update(zip(rows.tolist(), shard["id"].astype(str).tolist()))
        if best_values is not None and values.shape[1] != best_values.shape[1]:
            raise InputError(f"{out_dir}: shards have {best_values.shape[1]} and {values.shape[1]} concepts")
        totals = values.sum(0) if totals is None else totals + values.sum(0)
        candidates = values if best_values is None else np.concatenate([best_values, values])
        candidate_rows = (
            np.broadcast_to(rows[:, None], values.shape)
            if best_rows is None
            else np.concatenate([best_rows, np.broadcast_to(rows[:, None], values.shape)])
        )
        keep = np.argsort(-candidates, axis=0, kind="stable")[:top]
        best_values = np.take_along_axis(candidates, keep, 0)
        best_rows = np.take_along_axis(candidate_rows, keep, 0)
        kept = set(best_rows.ravel().tolist())
        names = {row: name for row, name in names.items() if row in kept}
    if best_values is None or best_rows is None or totals is None:  # no shard had values
        raise InputError(f"{out_dir}: no record has {column} values (run with --option {column}=LAYER)")
    share = totals / totals.sum() if totals.sum() != 0 else np.zeros_like(totals)
    records = []
    for concept in range(best_values.shape[1]):
        for rank in range(best_values.shape[0]):
            row = int(best_rows[rank, concept])
            records.append(
                {
                    "concept": concept,
                    "rank": rank,
                    "id": names[row],
                    "row": row,
                    "relevance": float(best_values[rank, concept]),
                    "share": float(share[concept]),
                }
            )
    return pd.DataFrame(records, columns=["concept", "rank", "id", "row", "relevance", "share"])
