"""``TextExplanation``: the relevance of one text's tokens and words."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

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
            return pd.DataFrame({
                "word": self.words, "start": [s for s, _ in self.word_spans], "end": [e for _, e in self.word_spans],
                "relevance": self.word_relevance.tolist(),
            })
        if level != "token":
            raise ValueError(f"level must be 'token' or 'word', got {level!r}")
        frame = pd.DataFrame({
            "token": self.tokens, "token_id": self.token_ids, "start": [s for s, _ in self.token_spans],
            "end": [e for _, e in self.token_spans], "special": self.special, "word": self.token_word,
            "relevance": self.token_relevance.tolist(),
        })
        for name, values in self.embedding_relevance.items():
            frame[f"relevance_{name.rsplit('.', 1)[-1]}"] = values.tolist()
        return frame

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (JSON-serialisable)."""
        return {
            "text": self.text, "composite": self.composite, "prediction": self.prediction,
            "probabilities": self.probabilities, "target": self.target, "explained": self.explained,
            "delta": self.delta, "special_relevance": self.special_relevance,
            "tokens": [
                {"token": t, "id": i, "span": list(s), "special": sp, "word": w, "relevance": float(r)}
                for t, i, s, sp, w, r in zip(self.tokens, self.token_ids, self.token_spans, self.special,
                                             self.token_word, self.token_relevance.tolist())
            ],
            "words": [
                {"word": w, "span": list(s), "relevance": float(r)}
                for w, s, r in zip(self.words, self.word_spans, self.word_relevance.tolist())
            ],
            "embedding_relevance": {k: v.tolist() for k, v in self.embedding_relevance.items()},
        }
