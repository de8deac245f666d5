"""A small DNABERT-2-like classifier: BERT layers with ALiBi attention and a GLU feed-forward.

DNABERT-2 (Zhou et al., ICLR 2024) replaces BERT's learned positions by ALiBi (Press et al. 2022: a
head-specific bias ``-slope_h |i - j|`` added to the attention scores; symmetric in an encoder) and
its feed-forward by a gated linear unit (``W_o (gelu(x W_g) * x W_u)``). :class:`AlibiEncoderForSequenceClassification`
is that architecture in a few modules of ours, with transformers' parts where they exist: attention
goes through transformers' ``AttentionInterface`` (SDPA by default) with the ALiBi bias and the
padding mask as its additive mask, so the AttnLRP and CP-LRP attention rules apply unchanged; the
bias is input-independent and gets no relevance. Post-LayerNorm layers as BERT, a pooler
(dense + tanh on the first token) and a linear head, logits in ``.logits``. It takes ``input_ids``
or ``inputs_embeds`` with an ``attention_mask`` (1 = token, 0 = padding), as a transformers
sequence classifier, so :class:`~lrp_domains.bio.dna_lm.explainer.TokenSequenceExplainer` (kind
``dna-lm``) explains it to bases. Any DNA tokenizer fits; the bench uses
:func:`~lrp_domains.bio.dna_lm.tokenizers.kmer_tokenizer` (k = 3). :func:`train_alibi_encoder`
trains it on the synthetic planted motifs on CPU in minutes.
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
    "AlibiEncoderForSequenceClassification",
    "alibi_bias",
    "alibi_config",
    "alibi_slopes",
    "eager_attention_forward",
    "train_alibi_encoder",
]


def alibi_config(tokenizer: Any, **settings: Any) -> Any:
    """A transformers ``PretrainedConfig`` for the encoder: ``hidden_size`` (64), ``layers`` (2),
    ``heads`` (4), ``intermediate_size`` (2 x hidden), ``num_labels`` (2), the tokenizer's size and
    padding id; ``max_tokens`` (the tokenizer's ``model_max_length``) only bounds the input."""
    from transformers import PretrainedConfig

    hidden = int(settings.get("hidden_size", 64))
    labels = int(settings.get("num_labels", 2))
    config = PretrainedConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=int(settings.get("layers", 2)),
        num_attention_heads=int(settings.get("heads", 4)),
        intermediate_size=int(settings.get("intermediate_size") or 2 * hidden),
        max_position_embeddings=int(settings.get("max_tokens") or tokenizer.model_max_length),
        layer_norm_eps=1e-12,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=labels,
        id2label={i: str(i) for i in range(labels)},
    )
    if hidden % config.num_attention_heads:
        raise ValueError(f"hidden_size ({hidden}) must be a multiple of heads ({config.num_attention_heads})")
    return config


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's head slopes ``2^(-8 h / H)``, h = 1..H (Press et al. 2022; for a power of two H)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])


def alibi_bias(slopes: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``-slope_h |i - j|`` plus the padding mask (the dtype's minimum where key ``j`` is padding):
    ``(N, H, T, T)``, input-independent except for where the padding is."""
    length = mask.shape[1]
    positions = torch.arange(length, device=mask.device)
    distance = (positions[None, :] - positions[:, None]).abs().to(dtype)
    bias = -slopes.to(device=mask.device, dtype=dtype)[:, None, None] * distance  # (H, T, T)
    padding = (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
    return bias[None] + padding


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out (for ``attn_implementation="eager"``): ``softmax(q k^T s + bias) v``,
    returned as ``(N, T, H, d)`` like transformers' implementations."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class AlibiSelfAttention(nn.Module):
    """Multi-head self-attention through transformers' ``AttentionInterface``, the ALiBi bias as mask."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``(N, T, hidden)`` -> ``(N, T, hidden)``; ``bias`` ``(N, H, T, T)``."""
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        n, length, _ = hidden.shape
        q, k, v = self.Wqkv(hidden).view(n, length, 3, self.heads, self.head_dim).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        name = self.config._attn_implementation
        attention = eager_attention_forward if name in (None, "eager") else ALL_ATTENTION_FUNCTIONS[name]
        out, _ = attention(self, q, k, v, bias, scaling=self.scaling, dropout=0.0, is_causal=False)
        return self.dense(out.reshape(n, length, -1))


class GatedFeedForward(nn.Module):
    """DNABERT-2's GLU: ``W_o (gelu(x W_g) * x W_u)`` (one bias-free projection to gate and up)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.inner = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * self.inner, bias=False)
        self.act = nn.GELU()
        self.wo = nn.Linear(self.inner, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # noqa: D102
        gate, up = self.gated_layers(hidden).split(self.inner, dim=-1)
        return self.wo(self.act(gate) * up)


class AlibiLayer(nn.Module):
    """A post-LayerNorm BERT layer with ALiBi attention and the GLU feed-forward."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.attention = AlibiSelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = GatedFeedForward(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # noqa: D102
        hidden = self.attention_norm(hidden + self.attention(hidden, bias))
        return self.mlp_norm(hidden + self.mlp(hidden))


class AlibiEncoderForSequenceClassification(nn.Module):
    """The DNABERT-2-like classifier (see the module docstring); ``config`` from :func:`alibi_config`."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        if getattr(config, "_attn_implementation_internal", None) is None:
            config._attn_implementation = "sdpa"
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.embedding_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(AlibiLayer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.pooler_act = nn.Tanh()
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.register_buffer("slopes", alibi_slopes(config.num_attention_heads), persistent=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding (relevance of a token is read at its output)."""
        return self.word_embeddings

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
        bias = alibi_bias(self.slopes, attention_mask, embeds.dtype)
        hidden = self.embedding_norm(embeds)
        for layer in self.layers:
            hidden = layer(hidden, bias)
        pooled = self.pooler_act(self.pooler(hidden[:, 0]))
        return SequenceClassifierOutput(logits=self.classifier(pooled))


def train_alibi_encoder(
    data: SyntheticDataset,
    k: int = 3,
    epochs: int = 20,
    seed: int = 0,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    batch_size: int = 64,
    lr: float = 2e-3,
    log: Any = None,
) -> tuple[AlibiEncoderForSequenceClassification, Any]:
    """Train the encoder with a :func:`~lrp_domains.bio.dna_lm.tokenizers.kmer_tokenizer` of ``k``
    on ``data`` (label = motif planted; reverse complements as augmentation); returns
    ``(model in eval mode, tokenizer)``. AdamW, linear warm-up and cosine decay, the same ``seed``
    giving the same model."""
    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(k)
    longest = max(len(s) for s in data.sequences)
    torch.manual_seed(seed)
    config = alibi_config(
        tokenizer, hidden_size=hidden_size, layers=layers, heads=heads, max_tokens=max(longest + 2, 1000)
    )
    model = AlibiEncoderForSequenceClassification(config)
    generator = torch.Generator().manual_seed(seed)
    n = len(data)
    optimizer, schedule = adamw_warmup_cosine(model.parameters(), lr, epochs * math.ceil(n / batch_size))
    sequences = [s.upper() for s in data.sequences]
    labels = data.labels.long()
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        loss = train_epoch(
            model, tokenizer, sequences, labels, optimizer, schedule, generator, batch_size, flip_rate=0.5
        )
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f} ({time.perf_counter() - start:.0f} s)")
    model.eval()
    optimizer.zero_grad(set_to_none=True)
    return model, tokenizer
