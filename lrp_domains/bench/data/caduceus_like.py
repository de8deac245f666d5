"""A Caduceus-like state-space DNA classifier: transformers' Mamba over single bases, both strands.

Caduceus (Schiff et al., ICML 2024) makes Mamba bidirectional and reverse-complement (RC) aware by
sharing parameters between a sequence and its reverse complement. :class:`CaduceusLikeForSequenceClassification`
does it the simplest exact way, from transformers' ``MambaModel`` (its blocks, RMSNorm and the torch
scan, so the state-space rules of :mod:`lrp_domains.text.state_space` apply):

- single-base tokens (:func:`~lrp_domains.bio.dna_lm.tokenizers.kmer_tokenizer` with k = 1: ``<cls>``,
  then one token per base) and an RC-equivariant embedding: the complement's embedding is the
  channel-reversed embedding of the base (``E[T] = flip(E[A])``, ``E[G] = flip(E[C])``, ``E[N] =
  flip(E[N])``, kept so by :func:`tie_reverse_complement` after every training step);
- the forward strand is the embedded sequence; the RC strand is the same embeddings read backwards
  with their channels reversed, which is exactly the embedding of the reverse complement (``<cls>``
  stays first; padding stays last, so each strand's causal scan never sees it);
- one ``MambaModel`` (shared weights) scans both strands, each strand's states are averaged over
  its tokens, the two summed and a linear head gives the logits. The prediction is RC-invariant:
  a sequence and its reverse complement get the same logits.

The token relevance is read at the embedding, once per token (both strands start from it), so
:class:`~lrp_domains.bio.dna_lm.explainer.TokenSequenceExplainer` (kind ``dna-lm``) maps it to
bases. :func:`train_caduceus_like` trains it on the synthetic planted motifs on CPU.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from lrp_domains.bench.data.synthetic import SyntheticDataset
from lrp_domains.bench.data.training import adamw_warmup_cosine, train_epoch

__all__ = [
    "CaduceusLikeForSequenceClassification",
    "caduceus_config",
    "tie_reverse_complement",
    "train_caduceus_like",
]

#: Base -> its complement (the pairs whose embeddings are tied).
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}


def caduceus_config(tokenizer: Any, **settings: Any) -> Any:
    """A transformers ``PretrainedConfig`` for the model: ``hidden_size`` (32), ``layers`` (2),
    ``state_size`` (8), ``expand`` (2), ``conv_kernel`` (4), ``num_labels`` (2), the tokenizer's
    vocabulary and padding; ``bias`` (False) for the projections' biases."""
    from transformers import PretrainedConfig

    labels = int(settings.get("num_labels", 2))
    vocab = tokenizer.get_vocab()
    return PretrainedConfig(
        vocab_size=len(tokenizer),
        hidden_size=int(settings.get("hidden_size", 32)),
        num_hidden_layers=int(settings.get("layers", 2)),
        state_size=int(settings.get("state_size", 8)),
        expand=int(settings.get("expand", 2)),
        conv_kernel=int(settings.get("conv_kernel", 4)),
        use_bias=bool(settings.get("bias", False)),
        max_position_embeddings=int(settings.get("max_tokens") or tokenizer.model_max_length),
        pad_token_id=tokenizer.pad_token_id,
        complement_pairs=[[vocab[b], vocab[c]] for b, c in COMPLEMENT.items() if b in vocab and c in vocab],
        num_labels=labels,
        id2label={i: str(i) for i in range(labels)},
    )


@torch.no_grad()
def tie_reverse_complement(embedding: nn.Embedding, pairs: list[list[int]]) -> None:
    """Make ``E[complement(b)] = flip(E[b])`` for each ``(b, complement)`` id pair (averaging the two)."""
    weight = embedding.weight
    for base, complement in pairs:
        shared = (weight[base] + weight[complement].flip(-1)) / 2
        weight[base] = shared
        weight[complement] = shared.flip(-1)


class CaduceusLikeForSequenceClassification(nn.Module):
    """The two-strand Mamba classifier (see the module docstring); ``config`` from :func:`caduceus_config`."""

    def __init__(self, config: Any) -> None:
        from transformers import MambaConfig, MambaModel

        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        mamba = MambaConfig(
            vocab_size=1,  # the backbone's own embedding is unused (inputs_embeds)
            hidden_size=config.hidden_size,
            state_size=config.state_size,
            num_hidden_layers=config.num_hidden_layers,
            expand=config.expand,
            conv_kernel=config.conv_kernel,
            use_bias=config.use_bias,
            residual_in_fp32=False,
            use_cache=False,
        )
        self.backbone = MambaModel(mamba)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        nn.init.normal_(self.word_embeddings.weight, std=0.5)
        tie_reverse_complement(self.word_embeddings, config.complement_pairs)

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding (relevance of a token is read at its output)."""
        return self.word_embeddings

    @staticmethod
    def reverse_complement_strand(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The RC strand of embedded sequences ``(N, T, H)`` with ``mask`` ``(N, T)``: position 0
        (``<cls>``) kept, the tokens ``1 .. len-1`` read backwards with reversed channels, padding kept last."""
        length = mask.sum(1, keepdim=True)  # (N, 1)
        positions = torch.arange(embeds.shape[1], device=embeds.device)[None, :]
        inside = (positions >= 1) & (positions < length)
        index = torch.where(inside, length - positions, positions)
        flipped = torch.where(inside[..., None], embeds.flip(-1), embeds)
        return flipped.gather(1, index[..., None].expand_as(embeds))

    def _strand(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = self.backbone(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        weights = mask.to(states.dtype)[..., None]
        return (states * weights).sum(1) / weights.sum(1)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Logits ``(N, num_labels)`` in a transformers ``SequenceClassifierOutput``."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        embeds = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if attention_mask is None:
            attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        embeds = embeds * attention_mask[..., None].to(embeds.dtype)
        pooled = self._strand(embeds, attention_mask) + self._strand(
            self.reverse_complement_strand(embeds, attention_mask), attention_mask
        )
        return SequenceClassifierOutput(logits=self.classifier(pooled))


def train_caduceus_like(
    data: SyntheticDataset,
    epochs: int = 10,
    seed: int = 0,
    *,
    hidden_size: int = 32,
    layers: int = 2,
    state_size: int = 8,
    batch_size: int = 64,
    lr: float = 3e-3,
    log: Any = None,
) -> tuple[CaduceusLikeForSequenceClassification, Any]:
    """Train the model with single-base tokens on ``data`` (label = motif planted); returns
    ``(model in eval mode, tokenizer)``. AdamW, linear warm-up and cosine decay, the RC tie kept after
    each step; the same ``seed`` gives the same model. No augmentation is needed: the model is
    RC-invariant by construction."""
    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(1)
    longest = max(len(s) for s in data.sequences)
    torch.manual_seed(seed)
    config = caduceus_config(
        tokenizer, hidden_size=hidden_size, layers=layers, state_size=state_size, max_tokens=max(longest + 2, 1000)
    )
    model = CaduceusLikeForSequenceClassification(config)
    generator = torch.Generator().manual_seed(seed)
    n = len(data)
    optimizer, schedule = adamw_warmup_cosine(model.parameters(), lr, epochs * math.ceil(n / batch_size))
    sequences = [s.upper() for s in data.sequences]
    labels = data.labels.long()
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
            after_step=lambda: tie_reverse_complement(model.word_embeddings, config.complement_pairs),
        )
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f} ({time.perf_counter() - start:.0f} s)")
    model.eval()
    optimizer.zero_grad(set_to_none=True)
    return model, tokenizer
