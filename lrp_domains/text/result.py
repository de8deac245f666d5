"""``TextExplanation``: the relevance of one text's tokens and words."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from lrp_domains.core.engine.ledger import LedgerRows

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class TextExplanation:
    """Relevance of one text for one explained output.

    ``token_relevance`` is the relevance of each token's word embedding (summed over the hidden
    dimension), special tokens included; ``words`` / ``word_relevance`` / ``word_spans`` sum it
    over the tokens of each word (special tokens belong to no word). Relevance that went to other
    embeddings (positions, token types) is in ``embedding_relevance``, per token. ``delta`` is the
    explained value minus all of it: what biases and stabilizers absorbed.
    """

    text: str
    tokens: list[str]
    token_ids: list[int]
    token_spans: list[tuple[int, int]]
    special: list[bool]
    token_relevance: torch.Tensor
    words: list[str]
    word_spans: list[tuple[int, int]]
    word_relevance: torch.Tensor
    token_word: list[int]
    embedding_relevance: dict[str, torch.Tensor]
    prediction: str
    probabilities: dict[str, float]
    target: str | None
    explained: float
    delta: float
    composite: str
    #: Tokens dropped because the text was longer than the model takes (0: none).
    truncated: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: With ``explain(..., ledger=True)``: where ``delta`` went (:attr:`ledger`).
    ledger_rows: LedgerRows | None = None

    @property
    def ledger(self) -> pd.DataFrame:
        """Where the relevance went: what each module absorbed, and the ``(numerical)`` rest (see
        :attr:`lrp_domains.core.engine.result.Explanation.ledger`)."""
        if self.ledger_rows is None:
            raise ValueError("this explanation has no ledger: explain with ledger=True")
        return self.ledger_rows.to_frame().drop(columns="example")

    @property
    def special_relevance(self) -> float:
        """Relevance of the special tokens' embeddings ([CLS], [SEP], <s>...), summed."""
        mask = torch.tensor(self.special, dtype=torch.bool)
        return float(self.token_relevance[mask].sum()) if mask.any() else 0.0

    @property
    def total_relevance(self) -> float:
        """All relevance that reached an embedding: tokens (special included) and the others."""
        return float(self.token_relevance.sum()) + sum(float(v.sum()) for v in self.embedding_relevance.values())

    def to_frame(self, level: str = "token") -> pd.DataFrame:
        """One row per token (``level="token"``) or per word (``level="word"``)."""
        import pandas as pd

        if level == "word":
            return pd.DataFrame(
                {
                    "word": self.words,
                    "start": [s for s, _ in self.word_spans],
                    "end": [e for _, e in self.word_spans],
                    "relevance": self.word_relevance.tolist(),
                }
            )
        if level != "token":
            raise ValueError(f"level must be 'token' or 'word', got {level!r}")
        frame = pd.DataFrame(
            {
                "token": self.tokens,
                "token_id": self.token_ids,
                "start": [s for s, _ in self.token_spans],
                "end": [e for _, e in self.token_spans],
                "special": self.special,
                "word": self.token_word,
                "relevance": self.token_relevance.tolist(),
            }
        )
        for name, values in self.embedding_relevance.items():
            frame[f"relevance_{name.rsplit('.', 1)[-1]}"] = values.tolist()
        return frame

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (JSON-serialisable)."""
        return {
            "text": self.text,
            "composite": self.composite,
            "prediction": self.prediction,
            "probabilities": self.probabilities,
            "target": self.target,
            "explained": self.explained,
            "delta": self.delta,
            "special_relevance": self.special_relevance,
            "tokens": [
                {"token": t, "id": i, "span": list(s), "special": sp, "word": w, "relevance": float(r)}
                for t, i, s, sp, w, r in zip(
                    self.tokens,
                    self.token_ids,
                    self.token_spans,
                    self.special,
                    self.token_word,
                    self.token_relevance.tolist(),
                )
            ],
            "words": [
                {"word": w, "span": list(s), "relevance": float(r)}
                for w, s, r in zip(self.words, self.word_spans, self.word_relevance.tolist())
            ],
            "embedding_relevance": {k: v.tolist() for k, v in self.embedding_relevance.items()},
        }


#: The run columns of text explanations (:func:`text_rows`): everything :func:`explanations_from_rows`
#: needs to rebuild them (spans for the pages, the other embeddings' relevance per token).
TEXT_RUN_COLUMNS = (
    "explained",
    "delta",
    "text",
    "prediction",
    "target",
    "tokens",
    "token_relevance",
    "special",
    "words",
    "word_relevance",
    "other_relevance",
    "truncated",
    "token_ids",
    "token_spans",
    "word_spans",
    "token_word",
    "probabilities",
    "embedding_names",
    "embedding_relevance",
    "ledger",
)


def text_rows(results: list[TextExplanation]) -> dict[str, list]:
    """The run columns of text explanations, one value per text (``probabilities`` as a JSON
    object: class or token -> probability)."""
    import json

    return {
        "explained": [r.explained for r in results],
        "delta": [r.delta for r in results],
        "text": [r.text for r in results],
        "prediction": [r.prediction for r in results],
        "target": [r.target for r in results],
        "tokens": [r.tokens for r in results],
        "token_relevance": [r.token_relevance.tolist() for r in results],
        "special": [r.special for r in results],
        "words": [r.words for r in results],
        "word_relevance": [r.word_relevance.tolist() for r in results],
        "other_relevance": [float(sum(v.sum() for v in r.embedding_relevance.values())) for r in results],
        "truncated": [r.truncated for r in results],
        "token_ids": [list(map(int, r.token_ids)) for r in results],
        "token_spans": [[list(map(int, span)) for span in r.token_spans] for r in results],
        "word_spans": [[list(map(int, span)) for span in r.word_spans] for r in results],
        "token_word": [list(map(int, r.token_word)) for r in results],
        "probabilities": [json.dumps(r.probabilities) for r in results],
        "embedding_names": [list(r.embedding_relevance) for r in results],
        "embedding_relevance": [[v.tolist() for v in r.embedding_relevance.values()] for r in results],
        "ledger": [None if r.ledger_rows is None else r.ledger_rows.example_json(0) for r in results],
    }


def explanations_from_rows(rows: pd.DataFrame, composite: str = "") -> list[TextExplanation]:
    """The :class:`TextExplanation` of each of a run's rows (the inverse of :func:`text_rows`)."""
    import json

    def spans(values: object) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in values]

    found = []
    for row in rows.itertuples(index=False):
        found.append(
            TextExplanation(
                text=str(row.text),
                tokens=list(row.tokens),
                token_ids=[int(i) for i in row.token_ids],
                token_spans=spans(row.token_spans),
                special=[bool(s) for s in row.special],
                token_relevance=torch.tensor(list(row.token_relevance), dtype=torch.float64),
                words=list(row.words),
                word_spans=spans(row.word_spans),
                word_relevance=torch.tensor(list(row.word_relevance), dtype=torch.float64),
                token_word=[int(w) for w in row.token_word],
                embedding_relevance={
                    str(name): torch.tensor(list(values), dtype=torch.float64)
                    for name, values in zip(row.embedding_names, row.embedding_relevance)
                },
                prediction=str(row.prediction),
                probabilities=json.loads(row.probabilities),
                target=None if row.target is None else str(row.target),
                explained=float(row.explained),
                delta=float(row.delta),
                composite=composite,
                truncated=int(row.truncated),
                ledger_rows=LedgerRows.from_json([row.ledger]) if getattr(row, "ledger", None) is not None else None,
            )
        )
    return found
