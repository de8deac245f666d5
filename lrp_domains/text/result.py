"""``TextExplanation``: the relevance of one text's tokens and words."""

from __future__ import annotations

import html
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

    def to_html(self, level: str = "word") -> str:
        """A self-contained HTML fragment: the text with a red (positive) / blue (negative)
        heatmap, values on hover, and the prediction. Every string is escaped."""
        values = self.word_relevance if level == "word" else self.token_relevance
        spans = self.word_spans if level == "word" else self.token_spans
        scale = float(values.abs().max()) if len(values) else 0.0
        pieces, cursor = [], 0
        for (start, end), value in zip(spans, values.tolist()):
            if end <= start:
                continue
            pieces.append(html.escape(self.text[cursor:start]))
            alpha = 0.0 if scale == 0 else min(abs(value) / scale, 1.0)
            color = f"rgba(220, 40, 40, {alpha:.3f})" if value >= 0 else f"rgba(40, 90, 220, {alpha:.3f})"
            pieces.append(
                f'<span style="background:{color};border-radius:3px;padding:0 1px" '
                f'title="{value:+.4f}">{html.escape(self.text[start:end])}</span>'
            )
            cursor = end
        pieces.append(html.escape(self.text[cursor:]))
        probabilities = ", ".join(f"{html.escape(k)} {v:.3f}" for k, v in self.probabilities.items())
        target = "" if self.target is None else f" &middot; explained: {html.escape(str(self.target))}"
        return (
            '<div class="lrp-text" style="font-family:sans-serif;line-height:1.8">'
            f'<div style="font-size:90%;color:#444">prediction: <b>{html.escape(self.prediction)}</b> '
            f"({probabilities}){target} &middot; {html.escape(self.composite)}</div>"
            f'<div>{"".join(pieces)}</div></div>'
        )
