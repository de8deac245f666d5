"""Token attributions for text classifiers and their faithfulness under token perturbation.

Features are tokens; special tokens and padding are never removed. A removed token is replaced
by ``[UNK]`` (Ali et al. 2022), or another id of the caller's choice. Methods, all for the same
target class per text and the same tokenization:

- ``attnlrp``, ``cp-lrp``: :meth:`lrp_domains.text.TextExplainer.attribute`;
- ``gradient x input`` and ``integrated gradients`` on the word embeddings: the tensor baselines
  of :mod:`lrp_domains.evaluate.baselines` with the word embedding module as the source
  (integrated gradients from a zero embedding);
- ``attention rollout`` (Abnar & Zuidema 2020): head-averaged attention plus identity, rows
  normalised, multiplied over layers; the first token's row;
- ``random``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lrp_domains.core.engine.attribution import eval_mode
from lrp_domains.evaluate import baselines


@dataclass
class EncodedTexts:
    """Padded token ids ``(N, T)`` with their attention mask, token types and special-token flags."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    special: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, start: int, stop: int) -> EncodedTexts:
        """The texts ``start:stop``, trimmed to their longest."""
        width = int(self.attention_mask[start:stop].sum(1).max())
        return EncodedTexts(
            self.input_ids[start:stop, :width],
            self.attention_mask[start:stop, :width],
            None if self.token_type_ids is None else self.token_type_ids[start:stop, :width],
            self.special[start:stop, :width],
        )

    def model_inputs(self, device: torch.device, input_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Keyword arguments for the model (optionally with other ids, e.g. perturbed)."""
        inputs = {
            "input_ids": (self.input_ids if input_ids is None else input_ids).to(device),
            "attention_mask": self.attention_mask.to(device),
        }
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids.to(device)
        return inputs


def encode(tokenizer, texts: Sequence[str], max_length: int | None = None) -> EncodedTexts:
    """Tokenize with special tokens, pad on the right, truncate at ``max_length``."""
    enc = tokenizer(
        list(texts),
        padding=True,
        truncation=max_length is not None,
        max_length=max_length,
        return_special_tokens_mask=True,
        return_tensors="pt",
    )
    special = enc["special_tokens_mask"].bool() & enc["attention_mask"].bool()
    return EncodedTexts(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"), special)


def _batches(encoded: EncodedTexts, batch_size: int) -> Iterator[tuple[int, EncodedTexts]]:
    for start in range(0, len(encoded), batch_size):
        yield start, encoded.rows(start, min(start + batch_size, len(encoded)))


def _pad_to(values: torch.Tensor, width: int) -> torch.Tensor:
    return nn.functional.pad(values, (0, width - values.shape[1]))


def _logits(model: nn.Module, **inputs: torch.Tensor) -> torch.Tensor:
    out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out[0]


def predict(
    model: nn.Module, encoded: EncodedTexts, input_ids: torch.Tensor | None = None, batch_size: int = 64
) -> torch.Tensor:
    """Logits ``(N, C)`` for the texts (or for the same texts with other ids), without gradients."""
    device = next(model.parameters()).device
    ids = encoded.input_ids if input_ids is None else input_ids
    parts = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            rows = encoded.rows(start, min(start + batch_size, len(encoded)))
            width = rows.input_ids.shape[1]
            inputs = rows.model_inputs(device, ids[start : start + len(rows), :width])
            parts.append(_logits(model, **inputs).float().cpu())
    return torch.cat(parts)


def _word_embedding(model: nn.Module) -> str:
    """The name of the model's word embedding module (``get_input_embeddings``)."""
    embeddings = model.get_input_embeddings()
    for name, module in model.named_modules():
        if module is embeddings:
            return name
    raise ValueError(f"{type(model).__name__}.get_input_embeddings() is not one of the model's modules")


def _on_word_embeddings(
    method: Callable, model: nn.Module, encoded: EncodedTexts, target: torch.Tensor, batch_size: int, **options: object
) -> torch.Tensor:
    """``method`` (a gradient baseline of :mod:`lrp_domains.evaluate.baselines`) read at the word
    embedding's output, summed over the hidden dimension, per batch of texts: ``(N, T)``."""
    device = next(model.parameters()).device
    word = _word_embedding(model)
    parts = []
    for start, rows in _batches(encoded, batch_size):
        result = method(model, rows.model_inputs(device), target[start : start + len(rows)], sources=[word], **options)
        parts.append(_pad_to(result.sources[word].sum(-1).detach().double().cpu(), encoded.input_ids.shape[1]))
    return torch.cat(parts)


def gradient_x_input(
    model: nn.Module, encoded: EncodedTexts, target: torch.Tensor, batch_size: int = 16
) -> torch.Tensor:
    """Word embedding x gradient, summed over the hidden dimension: ``(N, T)``
    (:func:`lrp_domains.evaluate.gradient_x_input` with the word embedding as the source)."""
    return _on_word_embeddings(baselines.gradient_x_input, model, encoded, target, batch_size)


def integrated_gradients(
    model: nn.Module, encoded: EncodedTexts, target: torch.Tensor, steps: int = 25, batch_size: int = 16
) -> torch.Tensor:
    """Integrated gradients on the word embeddings from a zero embedding (midpoint rule, ``steps``
    forward and backward passes), summed over the hidden dimension: ``(N, T)``
    (:func:`lrp_domains.evaluate.integrated_gradients` with the word embedding as the source; 25
    steps here, as the text benchmark has always run, where the tensor function's default is 32)."""
    return _on_word_embeddings(baselines.integrated_gradients, model, encoded, target, batch_size, steps=steps)


@contextlib.contextmanager
def _eager_attention(model: nn.Module) -> Iterator[None]:
    """Eager attention for the block (it alone returns attention probabilities); restored after."""
    config = model.config
    saved = config._attn_implementation_internal
    config._attn_implementation_internal = "eager"
    try:
        yield
    finally:
        config._attn_implementation_internal = saved


def attention_rollout(model: nn.Module, encoded: EncodedTexts, batch_size: int = 16) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) from the first token (``[CLS]``): ``(N, T)``."""
    device = next(model.parameters()).device
    parts = []
    with eval_mode(model), torch.no_grad(), _eager_attention(model):
        for _, rows in _batches(encoded, batch_size):
            out = model(**rows.model_inputs(device), output_attentions=True)
            width = rows.input_ids.shape[1]
            identity = torch.eye(width, device=device, dtype=torch.float64)
            rollout = identity.expand(len(rows), width, width)
            for attention in out.attentions:
                mixed = 0.5 * attention.double().mean(1) + 0.5 * identity
                mixed = mixed / mixed.sum(-1, keepdim=True)
                rollout = mixed @ rollout
            relevance = rollout[:, 0, :] * rows.attention_mask.to(device)
            parts.append(_pad_to(relevance.double().cpu(), encoded.input_ids.shape[1]))
    return torch.cat(parts)


def random_tokens(encoded: EncodedTexts, seed: int = 0) -> torch.Tensor:
    """Standard-normal token scores (seeded)."""
    return torch.randn(encoded.input_ids.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def lrp(explainer, encoded: EncodedTexts, target: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Word-embedding relevance from a :class:`~lrp_domains.text.TextExplainer`: ``(N, T)``."""
    parts = []
    for start, rows in _batches(encoded, batch_size):
        relevance, _ = explainer.attribute(
            rows.input_ids, rows.attention_mask, rows.token_type_ids, target=target[start : start + len(rows)]
        )
        parts.append(_pad_to(relevance.double().cpu(), encoded.input_ids.shape[1]))
    return torch.cat(parts)


def replace_tokens(encoded: EncodedTexts, replacement: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``replace(ids, removed)`` for :func:`lrp_domains.evaluate.curve`: removed tokens become
    ``replacement``."""

    def replace(ids: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
        return ids.masked_fill(removed, replacement)

    return replace
