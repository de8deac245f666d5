"""A small Nucleotide-Transformer-like classifier, trained on the synthetic planted-motif data.

:func:`build_nt_like` builds a tiny ``EsmForSequenceClassification`` (the transformers class of
Nucleotide Transformer, Dalla-Torre et al. 2024): pre-LayerNorm encoder layers, rotary position
embeddings (NT v2; ``position="absolute"`` gives NT v1's learned positions), ESM's erf-GELU, a
classification head on the CLS token. :func:`train_dna_language_model` trains it from scratch on
:func:`lrp_domains.bench.data.synthetic.make_dataset` sequences (label 1: a motif was planted) on CPU in
minutes; no pre-training, no download.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from lrp_domains.bench.data.synthetic import SyntheticDataset
from lrp_domains.bench.data.training import adamw_warmup_cosine, train_epoch

__all__ = ["accuracy", "build_nt_like", "predict", "train_dna_language_model"]


def build_nt_like(
    tokenizer: Any,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int | None = None,
    position: str = "rotary",
    num_labels: int = 2,
    max_tokens: int | None = None,
    seed: int = 0,
) -> torch.nn.Module:
    """A tiny ``EsmForSequenceClassification`` for ``tokenizer`` (a DNA tokenizer, e.g.
    :func:`~lrp_domains.bio.dna_lm.tokenizers.kmer_tokenizer`).

    ``position``: ``"rotary"`` (Nucleotide Transformer v2) or ``"absolute"`` (learned, v1).
    ``max_tokens``: longest input in tokens (default: the tokenizer's ``model_max_length``).
    Weights are initialised from ``seed``; the model is returned in eval mode, float32.
    """
    from transformers import EsmConfig, EsmForSequenceClassification

    if position not in ("rotary", "absolute"):
        raise ValueError(f"position must be 'rotary' or 'absolute', got {position!r}")
    if hidden_size % heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of heads ({heads})")
    max_tokens = int(max_tokens or tokenizer.model_max_length)
    config = EsmConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate_size or 2 * hidden_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=max_tokens + 2,
        position_embedding_type=position,
        pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id,
        token_dropout=False,
        emb_layer_norm_before=False,
        num_labels=num_labels,
        id2label={i: str(i) for i in range(num_labels)},
    )
    torch.manual_seed(seed)
    model = EsmForSequenceClassification(config).float().eval()
    _compositional_embeddings(model, tokenizer, seed)
    return model


@torch.no_grad()
def _compositional_embeddings(model: torch.nn.Module, tokenizer: Any, seed: int) -> None:
    """Start each DNA token's embedding as the sum of one random vector per (offset, base) of its
    bases, scaled to the default initialisation's size: tokens that share bases at the same offsets
    start close, which a k-mer vocabulary (4**k embeddings, each seen rarely) needs to train on
    thousands rather than millions of sequences. Special tokens keep their random start."""
    embedding = model.get_input_embeddings()
    width = embedding.weight.shape[1]
    tokens = [
        (t, i)
        for t, i in tokenizer.get_vocab().items()
        if t and set(t) <= set("ACGTN") and i < embedding.weight.shape[0]
    ]
    longest = max((len(t) for t, _ in tokens), default=1)
    generator = torch.Generator().manual_seed(seed + 1)
    parts = torch.randn(longest, 5, width, generator=generator) * 0.02 / math.sqrt(longest)
    letters = torch.tensor([["ACGTN".index(b) for b in t] + [0] * (longest - len(t)) for t, _ in tokens])
    present = torch.tensor([[1.0] * len(t) + [0.0] * (longest - len(t)) for t, _ in tokens])
    summed = (parts[torch.arange(longest), letters] * present[..., None]).sum(1)  # (tokens, width)
    scale = torch.sqrt(longest / present.sum(1, keepdim=True))
    embedding.weight[torch.tensor([i for _, i in tokens])] = (summed * scale).to(embedding.weight.dtype)


def _encode(tokenizer: Any, sequences: list[str]) -> dict[str, torch.Tensor]:
    return dict(tokenizer(sequences, padding=True, return_tensors="pt", return_token_type_ids=False))


@torch.no_grad()
def predict(model: torch.nn.Module, tokenizer: Any, sequences: list[str], batch_size: int = 256) -> torch.Tensor:
    """Logits ``(N, classes)`` for DNA strings (upper case), in batches, in eval mode."""
    training = model.training
    model.eval()
    try:
        parts = [
            model(**_encode(tokenizer, sequences[i : i + batch_size])).logits
            for i in range(0, len(sequences), batch_size)
        ]
    finally:
        model.train(training)
    return torch.cat(parts)


def accuracy(model: torch.nn.Module, tokenizer: Any, data: SyntheticDataset) -> float:
    """Share of ``data``'s sequences whose predicted class is their label."""
    predicted = predict(model, tokenizer, data.sequences).argmax(-1)
    return float((predicted == data.labels).double().mean())


def train_dna_language_model(
    data: SyntheticDataset,
    k: int = 6,
    epochs: int = 6,
    seed: int = 0,
    *,
    hidden_size: int = 64,
    layers: int = 4,
    heads: int = 4,
    position: str = "rotary",
    batch_size: int = 64,
    lr: float = 1e-3,
    train_embeddings: bool = True,
    dropout: float = 0.1,
    augment: bool = True,
    validation: SyntheticDataset | None = None,
    log: Any = None,
) -> tuple[torch.nn.Module, Any]:
    """Train :func:`build_nt_like` with a :func:`~lrp_domains.bio.dna_lm.tokenizers.kmer_tokenizer` of
    ``k`` on ``data`` (label = motif planted); returns ``(model in eval mode, tokenizer)``.

    AdamW with a linear warm-up and cosine decay, cross-entropy, the same ``seed`` giving the same
    model. ``validation``: a held-out set whose accuracy is logged after each epoch and stored, with
    the training record, in ``model.config.training`` (``log``: a callable taking a line, e.g.
    ``print``). Sequences must be ``ACGT``/``N`` strings of equal or different lengths.
    """
    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(k)
    longest = max(len(s) for s in data.sequences)
    model = build_nt_like(
        tokenizer,
        hidden_size=hidden_size,
        layers=layers,
        heads=heads,
        position=position,
        max_tokens=max(longest // k + k + 2, tokenizer.model_max_length),
        seed=seed,
    )
    model.config.hidden_dropout_prob = dropout
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = dropout
    generator = torch.Generator().manual_seed(seed)
    n = len(data)
    embedding = model.get_input_embeddings().weight
    trained = [p for p in model.parameters() if p is not embedding or train_embeddings]
    optimizer, schedule = adamw_warmup_cosine(trained, lr, epochs * math.ceil(n / batch_size))
    sequences = [s.upper() for s in data.sequences]
    labels = data.labels.long()
    record: dict[str, Any] = {
        "k": k,
        "epochs": epochs,
        "seed": seed,
        "train_sequences": n,
        "batch_size": batch_size,
        "lr": lr,
        "position": position,
        "epoch_accuracy": [],
    }
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        loss = train_epoch(
            model,
            tokenizer,
            sequences,
            labels,
            optimizer,
            schedule,
            generator,
            batch_size,
            flip_rate=0.5 if augment else 0.0,
        )
        line = f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}"
        if validation is not None:
            value = accuracy(model, tokenizer, validation)
            record["epoch_accuracy"].append(value)
            line += f", validation accuracy {value:.3f}"
        if log is not None:
            log(line + f" ({time.perf_counter() - start:.0f} s)")
    model.eval()
    optimizer.zero_grad(set_to_none=True)
    for param in model.parameters():
        param.grad = None
    record["seconds"] = round(time.perf_counter() - start, 1)
    if validation is not None:
        record["validation_accuracy"] = record["epoch_accuracy"][-1] if record["epoch_accuracy"] else None
    model.config.training = record
    return model, tokenizer
