"""How the bench's tiny DNA language models train (the NT-like ESM, the ALiBi encoder, the
Caduceus-like SSM): AdamW with a linear warm-up and cosine decay, cross-entropy on the planted-motif
label, gradient norm clipped at 1, optional reverse-complement augmentation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["adamw_warmup_cosine", "reverse_complement", "train_epoch"]


def reverse_complement(sequence: str) -> str:
    """The reverse complement of an upper-case DNA string (N stays N)."""
    return sequence.translate(str.maketrans("ACGTN", "TGCAN"))[::-1]


def adamw_warmup_cosine(parameters: Any, lr: float, steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (weight decay 0.01) and its schedule: a linear warm-up over the first 5% of ``steps``,
    then cosine decay to 0."""
    warmup = max(1, steps // 20)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    return optimizer, schedule


def train_epoch(
    model: torch.nn.Module,
    tokenizer: Any,
    sequences: list[str],
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    generator: torch.Generator,
    batch_size: int,
    *,
    flip_rate: float | None = None,
    after_step: Callable[[], None] | None = None,
) -> float:
    """One epoch in a random order drawn from ``generator``; returns the mean loss. ``flip_rate``:
    each sequence is replaced by its reverse complement with this probability (the draw is made,
    from ``generator``, whenever it is not None); ``after_step`` runs after each optimizer step."""
    n = len(sequences)
    order = torch.randperm(n, generator=generator).tolist()
    total = 0.0
    for i in range(0, n, batch_size):
        rows = order[i : i + batch_size]
        texts = [sequences[r] for r in rows]
        if flip_rate is not None:
            flips = (torch.rand(len(rows), generator=generator) < flip_rate).tolist()
            texts = [reverse_complement(t) if f else t for t, f in zip(texts, flips)]
        batch = dict(tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False))
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if after_step is not None:
            after_step()
        total += float(loss.detach()) * len(rows)
    return total / n
