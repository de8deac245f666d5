"""Output rows: one per text, sequence or cell, relevance as list columns.

Schema (Parquet; every shard has these columns, in this order):

- all: ``row`` (int64, position in the input), ``id`` (string), ``explained`` (float64),
  ``delta`` (float64);
- text: ``text``, ``prediction``, ``target`` (strings), ``tokens`` (list<string>),
  ``token_relevance`` (list<float64>, special tokens included), ``special`` (list<bool>),
  ``words`` (list<string>), ``word_relevance`` (list<float64>), ``other_relevance`` (float64:
  position and token-type embeddings together);
- sequences: ``sequence`` (string), ``relevance`` (list<float64>, one per position: the observed
  base's), ``hypothetical`` (list<float64>, 4 x L, base-major: all of A, then C, G, T);
- genes: ``prediction``, ``target`` (strings), ``relevance`` (list<float64>, one per gene in the
  model's order; the gene names are in the manifest).
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def kind_of(explainer: Any) -> str:
    """``"text"``, ``"sequences"`` or ``"genes"`` for an explainer of the corresponding adapter."""
    name = type(explainer).__name__
    kinds = {"TextExplainer": "text", "SequenceExplainer": "sequences", "ExpressionExplainer": "genes"}
    if name not in kinds:
        raise TypeError(f"explain_dataset needs a TextExplainer, SequenceExplainer or ExpressionExplainer, got {name}")
    return kinds[name]


def explain_rows(explainer: Any, ids: list[str], items: Any, first_row: int, options: dict) -> pd.DataFrame:
    """Explain one shard's items and return its rows (see the module docstring)."""
    kind = kind_of(explainer)
    rows = list(range(first_row, first_row + len(ids)))
    if kind == "text":
        empty = [i for i, text in enumerate(items) if not str(text).strip()]
        if empty:
            raise ValueError(f"row {first_row + empty[0]} (id {ids[empty[0]]!r}) is an empty text; drop empty rows")
        results = explainer.explain(list(items), target=options.get("target"), batch_size=options.get("batch_size", 16))
        return pd.DataFrame({
            "row": rows, "id": ids, "explained": [r.explained for r in results], "delta": [r.delta for r in results],
            "text": [r.text for r in results], "prediction": [r.prediction for r in results],
            "target": [r.target for r in results], "tokens": [r.tokens for r in results],
            "token_relevance": [r.token_relevance.tolist() for r in results], "special": [r.special for r in results],
            "words": [r.words for r in results], "word_relevance": [r.word_relevance.tolist() for r in results],
            "other_relevance": [float(sum(v.sum() for v in r.embedding_relevance.values())) for r in results],
        })
    if kind == "sequences":
        result = explainer.explain(list(items), ids=ids, target=options.get("target"),
                                   batch_size=options.get("batch_size", 64), center=options.get("center", False),
                                   rc_average=options.get("rc_average", False))
        per_position = result.per_position
        return pd.DataFrame({
            "row": rows, "id": ids, "explained": result.explained.tolist(), "delta": result.delta.tolist(),
            "sequence": result.sequences,
            "relevance": [per_position[i, :n].double().tolist() for i, n in enumerate(result.lengths)],
            "hypothetical": [result.hypothetical[i, :, :n].double().reshape(-1).tolist()
                             for i, n in enumerate(result.lengths)],
        })
    result = explainer.explain(items, target=options.get("target"), batch_size=options.get("batch_size", 256),
                               missing=options.get("missing", "error"))
    return pd.DataFrame({
        "row": rows, "id": ids, "explained": result.explained.to_numpy(), "delta": result.delta.to_numpy(),
        "prediction": result.prediction.to_numpy(),
        "target": None if result.target is None else result.target.to_numpy(),
        "relevance": [list(values) for values in result.relevance.to_numpy()],
    })
