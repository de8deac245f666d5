"""Relevance inside a transformer: per token and layer of the residual stream, per attention head.

With LRP as a modified gradient the relevance at any tensor of the forward pass is that tensor
times the modified gradient arriving there, so one forward and one backward pass per batch give
the relevance at every layer at once (:func:`lrp_domains.core.latent.layer_relevance`):

* :func:`layer_flow`: the residual stream's relevance per token at the embedding output and after
  each transformer block (hidden axis summed): how relevance moves between tokens from layer to
  layer. Under a conserving rule set (CP-LRP, or AttnLRP up to its softmax term) on a model without
  biases every row sums to the explained logit, since each block's output is a cut of the graph.
* :func:`head_relevance`: relevance per attention head, read at the input of each attention output
  projection (the heads' outputs concatenated, ``(tokens, heads x head_dim)``): the latent
  relevance of CRP (Achtibat et al., "From attribution maps to human-understandable explanations
  through Concept Relevance Propagation", *Nature Machine Intelligence* 5, 2023) with a head as the
  concept, propagated with AttnLRP (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance
  Propagation for Transformers", ICML 2024) or CP-LRP.
* :func:`corpus_heads`: the heads that carry the decision over a corpus.

Texts are tokenized and padded per batch exactly as :class:`~lrp_domains.text.TextExplainer`
does, with its composite and targets (classifiers: class index or label name; causal LMs: the next
token after the prompt), and padding is removed from every result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lrp_domains.core.engine.attribution import default_output, eval_mode, model_device
from lrp_domains.core.engine.targets import select_target
from lrp_domains.core.latent import layer_relevance
from lrp_domains.text.explainer import TextExplainer, TextTarget, _as_list, _Encoded

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ATTENTION_OUTPUTS",
    "HeadRelevance",
    "LayerFlow",
    "attention_outputs",
    "corpus_heads",
    "head_relevance",
    "layer_flow",
    "residual_stream",
]

#: Name endings of attention output projections, whose input is the heads' outputs concatenated.
ATTENTION_OUTPUTS = (
    "attention.output.dense",  # BERT, RoBERTa, ELECTRA
    "attention.out_lin",  # DistilBERT
    "self_attn.o_proj",  # LLaMA, Mistral, Qwen2, Gemma
    "attn.c_proj",  # GPT-2
    "self_attn.out_proj",  # OPT, BART, CLIP
    "attn.out_proj",  # GPT-J
    "attention.dense",  # GPT-NeoX, Pythia
    "self_attn.dense",  # Phi
)


# -- results ------------------------------------------------------------------------------------
@dataclass
class LayerFlow:
    """Relevance of one text's tokens along the residual stream (see :func:`layer_flow`).

    Attributes
    ----------
    text, tokens:
        The text and its tokens (special tokens included, padding removed).
    layers:
        Module names of the residual stream points, bottom up: the embedding output, then each
        transformer block's output.
    relevance:
        ``(len(layers), len(tokens))``: relevance at each point and token, summed over the hidden axis.
    explained:
        The explained output value (logit).
    target:
        The explained class (label name) or next token; None when a callable chose the output.
    """

    text: str
    tokens: list[str]
    layers: list[str]
    relevance: np.ndarray
    explained: float
    target: str | int | None

    @property
    def totals(self) -> np.ndarray:
        """``(len(layers),)`` the relevance at each point summed over tokens."""
        return self.relevance.sum(1)

    @property
    def delta(self) -> np.ndarray:
        """``(len(layers),)`` explained value minus each point's total: what the biases and
        stabilizers above the point absorbed (0 for CP-LRP on a bias-free model)."""
        return self.explained - self.totals

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, token): ``layer_index, layer, position, token, relevance``."""
        import pandas as pd

        n_layers, n_tokens = self.relevance.shape
        return pd.DataFrame(
            {
                "layer_index": np.repeat(np.arange(n_layers), n_tokens),
                "layer": np.repeat(np.asarray(self.layers, dtype=object), n_tokens),
                "position": np.tile(np.arange(n_tokens), n_layers),
                "token": np.tile(np.asarray(self.tokens, dtype=object), n_layers),
                "relevance": self.relevance.reshape(-1),
            }
        )


@dataclass
class HeadRelevance:
    """Relevance per attention head for a batch of texts (see :func:`head_relevance`).

    Attributes
    ----------
    texts:
        The texts, in order.
    layers:
        Module names of the attention output projections, one per layer, bottom up.
    relevance:
        ``(N, len(layers), heads)``: each head's relevance, summed over tokens and the head's
        dimensions.
    explained:
        ``(N,)`` the explained output values.
    targets:
        Per text, the explained class (label name) or next token; None when a callable chose it.
    """

    texts: list[str]
    layers: list[str]
    relevance: np.ndarray
    explained: np.ndarray
    targets: list[str | int | None]

    @property
    def heads(self) -> int:
        """Attention heads per layer."""
        return int(self.relevance.shape[2])

    def to_frame(self) -> pd.DataFrame:
        """One row per (text, layer, head): ``text_index, layer_index, layer, head, relevance``."""
        import pandas as pd

        n, n_layers, heads = self.relevance.shape
        return pd.DataFrame(
            {
                "text_index": np.repeat(np.arange(n), n_layers * heads),
                "layer_index": np.tile(np.repeat(np.arange(n_layers), heads), n),
                "layer": np.tile(np.repeat(np.asarray(self.layers, dtype=object), heads), n),
                "head": np.tile(np.arange(heads), n * n_layers),
                "relevance": self.relevance.reshape(-1),
            }
        )


# -- finding the layers -------------------------------------------------------------------------
def _config_value(model: nn.Module, *names: str) -> int | None:
    config = getattr(model, "config", None)
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _blocks(model: nn.Module) -> list[str]:
    """Names of the transformer blocks, bottom up: the children of the model's ``nn.ModuleList``
    of same-class modules (``bert.encoder.layer``, ``model.layers``, ``transformer.h``), the one
    whose length is the config's number of layers where that is known, else the longest."""
    count = _config_value(model, "num_hidden_layers", "n_layer", "n_layers", "num_layers")
    lists = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(child) for child in module}) == 1
    ]
    if count is not None and any(len(m) == count for _, m in lists):
        lists = [(name, m) for name, m in lists if len(m) == count]
    if not lists:
        raise ValueError(
            f"found no list of transformer blocks (an nn.ModuleList of same-class layers) in "
            f"{type(model).__name__}; layer_flow needs a Hugging Face-style encoder or decoder"
        )
    name, module = max(lists, key=lambda item: len(item[1]))
    return [f"{name}.{i}" if name else str(i) for i in range(len(module))]


def attention_outputs(model: nn.Module) -> list[str]:
    """Names of the attention output projections, bottom up (modules whose name ends with one of
    :data:`ATTENTION_OUTPUTS`). Raises ``ValueError`` naming the model class when there is none."""
    found = [
        name
        for name, _ in model.named_modules()
        if any(name == suffix or name.endswith("." + suffix) for suffix in ATTENTION_OUTPUTS)
    ]
    if not found:
        raise ValueError(
            f"found no attention output projection in {type(model).__name__} (modules named "
            f"*.{', *.'.join(ATTENTION_OUTPUTS)}); per-head relevance needs the layer whose input is "
            "the heads' outputs concatenated"
        )
    return found


def _heads(model: nn.Module) -> int:
    heads = _config_value(model, "num_attention_heads", "n_head", "n_heads")
    if heads is None:
        raise ValueError(
            f"{type(model).__name__}'s config gives no number of attention heads "
            "(num_attention_heads, n_head or n_heads)"
        )
    return heads


def _embedding_output(model: nn.Module, inputs: dict[str, torch.Tensor], first_block: str) -> str | None:
    """The module whose output is the first block's input (the residual stream after the
    embeddings: ``bert.embeddings``, ``model.embed_tokens``, GPT-2's ``transformer.drop``), found in
    one forward of ``inputs`` without gradients: the last module to finish before the first block
    starts whose output equals the block's input. None when no module outputs it."""
    finished: list[tuple[str, Any]] = []
    seen: dict[str, Any] = {}
    modules = dict(model.named_modules())

    def before_block(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if "input" not in seen:
            seen["input"] = args[0] if args else next(iter(kwargs.values()), None)
            seen["count"] = len(finished)

    handles = [
        module.register_forward_hook(lambda m, a, out, n=name: finished.append((n, out)))
        for name, module in modules.items()
        if name and not name.startswith(first_block + ".") and name != first_block
    ]
    handles.append(modules[first_block].register_forward_pre_hook(before_block, with_kwargs=True))
    try:
        with eval_mode(model), torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    entering = seen.get("input")
    if not isinstance(entering, torch.Tensor):
        return None
    for name, out in reversed(finished[: seen["count"]]):
        if isinstance(out, torch.Tensor) and out.shape == entering.shape and torch.equal(out, entering):
            return name
    return None


def _stream_names(embedding: str | None, blocks: list[str]) -> list[str]:
    return [embedding if embedding is not None else f"{blocks[0]} (input)"] + blocks


def residual_stream(explainer: TextExplainer, text: str = "Hello world") -> list[str]:
    """The residual stream points :func:`layer_flow` reads (its ``layers``), bottom up: the module
    that outputs the embeddings (``"<first block> (input)"`` where no module does) and each
    transformer block."""
    blocks = _blocks(explainer.model)
    encoded = explainer.encode([text])
    embedding = _embedding_output(
        explainer.model, explainer.model_inputs(encoded, model_device(explainer.model)), blocks[0]
    )
    return _stream_names(embedding, blocks)


# -- running ------------------------------------------------------------------------------------
def _targets(
    explainer: TextExplainer, n: int, target: TextTarget
) -> tuple[torch.Tensor | Callable | None, Callable | None, Callable[[int | None], str | int | None]]:
    """Resolved targets, the output function (:meth:`TextExplainer.resolve_targets`, as
    :meth:`~TextExplainer.explain` and :meth:`~TextExplainer.explain_next_token` resolve them) and
    how an explained index is named."""
    resolved, output = explainer.resolve_targets(target, n)
    if explainer.is_decoder:
        return resolved, output, lambda i: None if i is None else explainer.tokenizer.convert_ids_to_tokens(i)
    labels = explainer.labels or None
    return resolved, output, lambda i: None if i is None else (labels[i] if labels and i < len(labels) else i)


@dataclass
class _Batch:
    encoded: list[_Encoded]
    inputs: dict[str, torch.Tensor]
    relevance: dict[tuple[str, str], torch.Tensor]  # by (at, module name)
    explained: np.ndarray
    targets: list[str | int | None]


def _run(
    explainer: TextExplainer,
    texts: list[str],
    target: TextTarget,
    batch_size: int,
    points: Callable[[dict[str, torch.Tensor]], tuple[list[str], list[str]]],
) -> Iterator[_Batch]:
    """Per batch (padded as the explainer pads): relevance at the output of the modules
    ``points(batch)[0]`` and at the first input of ``points(batch)[1]`` (one forward and backward
    pass each), the explained values and the named targets."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = explainer.model
    encoded = explainer.encode(texts)
    targets, output_fn, name = _targets(explainer, len(texts), target)
    device = model_device(model)
    chosen: tuple[list[str], list[str]] | None = None
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        inputs = explainer.model_inputs(chunk, device)
        part = targets[start : start + batch_size] if isinstance(targets, torch.Tensor) else targets
        if chosen is None:
            chosen = points({key: value[:1] for key, value in inputs.items()})
        seen: list[torch.Tensor] = []

        def output(raw: Any, batch: Any, seen: list = seen) -> torch.Tensor:
            value = (output_fn or default_output)(raw, batch)
            seen.append(value)
            return value

        relevance: dict[tuple[str, str], torch.Tensor] = {}
        for at, layers in zip(("output", "input"), chosen):
            if layers:  # token ids: relevance reaches the layers through the embeddings' outputs
                read = layer_relevance(
                    model,
                    inputs,
                    layers,
                    part,
                    explainer.composite,
                    at=at,
                    output=output,
                    sources=nn.Embedding,
                    strict=explainer.strict,
                )
                relevance.update({(at, layer): value for layer, value in read.items()})
        explained, index = select_target(seen[-1].detach(), part)
        names = [None] * len(chunk) if index is None else [name(int(i)) for i in index.tolist()]
        yield _Batch(chunk, inputs, relevance, explained.double().cpu().numpy(), names)


def _check_tokens(name: str, value: torch.Tensor, inputs: dict[str, torch.Tensor]) -> None:
    expected = tuple(inputs["input_ids"].shape)
    if value.dim() < 3 or tuple(value.shape[:2]) != expected:
        raise ValueError(
            f"{name}: relevance of shape {tuple(value.shape)}; expected (texts, tokens) = {expected} "
            "first, then the hidden axis"
        )


# -- public functions ---------------------------------------------------------------------------
def layer_flow(
    explainer: TextExplainer, text_or_texts: str | Sequence[str], target: TextTarget = None, batch_size: int = 16
) -> list[LayerFlow]:
    """Relevance of each token in the residual stream after every layer: a token x layer map.

    The points are the embedding output (``bert.embeddings``, ``model.embed_tokens``...) and each
    transformer block's output (``bert.encoder.layer.N``, ``model.layers.N``, ``transformer.h.N``,
    ``distilbert.transformer.layer.N``), found generically; relevance there is activation times the
    modified gradient of the explainer's composite (AttnLRP, Achtibat et al., ICML 2024; or CP-LRP),
    summed over the hidden axis, from one forward and one backward pass per batch for all layers
    (CRP's latent relevance, Achtibat et al., Nat. Mach. Intell. 2023). Where no module outputs
    the stream entering the first block, that point is the first block's input (a second pass).

    ``target`` as for :meth:`TextExplainer.explain` (classifiers: None for the predicted class, a
    label name or index, one per text, or a callable on the logits; causal LMs: the next token).
    Padding is removed: a text's flow does not depend on the batch it ran in.

    Returns one :class:`LayerFlow` per text (a list, also for a single text).
    """
    texts, _ = _as_list(text_or_texts)
    blocks = _blocks(explainer.model)
    found: dict[str, str | None] = {}

    def points(batch: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        embedding = found["embedding"] = _embedding_output(explainer.model, batch, blocks[0])
        return ([embedding] if embedding else []) + blocks, ([] if embedding else [blocks[0]])

    flows: list[LayerFlow] = []
    for batch in _run(explainer, texts, target, batch_size, points):
        embedding = found["embedding"]
        layers = _stream_names(embedding, blocks)
        keys = [("output", embedding) if embedding else ("input", blocks[0])] + [("output", b) for b in blocks]
        stacked = []
        for key, layer in zip(keys, layers):
            value = batch.relevance[key]
            _check_tokens(layer, value, batch.inputs)
            stacked.append(value.reshape(*value.shape[:2], -1).sum(-1))
        table = torch.stack(stacked, 1).double().cpu().numpy()  # (n, layers, width)
        for row, e in enumerate(batch.encoded):
            flows.append(
                LayerFlow(
                    e.text,
                    explainer.tokenizer.convert_ids_to_tokens(e.ids),
                    list(layers),
                    table[row, :, : len(e.ids)].copy(),
                    float(batch.explained[row]),
                    batch.targets[row],
                )
            )
    return flows


def head_relevance(
    explainer: TextExplainer, text_or_texts: str | Sequence[str], target: TextTarget = None, batch_size: int = 16
) -> HeadRelevance:
    """Relevance of each attention head in each layer, per text.

    Read at the input of each attention output projection (BERT ``attention.output.dense``,
    LLaMA ``self_attn.o_proj``, GPT-2 ``attn.c_proj``, DistilBERT ``attention.out_lin``; see
    :data:`ATTENTION_OUTPUTS`), which is the heads' outputs concatenated: its relevance
    (activation x modified gradient, AttnLRP: Achtibat et al., ICML 2024, or CP-LRP) reshaped to
    ``(tokens, heads, head_dim)`` and summed over tokens and head dimensions is each head's
    relevance, a head as a concept in the sense of CRP (Achtibat et al., Nat. Mach. Intell. 2023).
    The number of heads comes from the model's config. One forward and backward pass per batch.

    ``target`` as for :func:`layer_flow`. Raises ``ValueError`` naming the model class when it has
    no recognised attention output projection.
    """
    texts, _ = _as_list(text_or_texts)
    model = explainer.model
    projections = attention_outputs(model)
    heads = _heads(model)
    parts, explained, targets = [], [], []
    for batch in _run(explainer, texts, target, batch_size, lambda _: ([], projections)):
        real = batch.inputs["attention_mask"].to(torch.bool) if "attention_mask" in batch.inputs else None
        layers = []
        for name in projections:
            value = batch.relevance["input", name]
            _check_tokens(name, value, batch.inputs)
            width = value.shape[-1]
            if value.dim() != 3 or width % heads:
                raise ValueError(
                    f"{name}: its input has shape {tuple(value.shape)}, which does not split into "
                    f"{heads} heads (the config's number of attention heads)"
                )
            if real is not None:
                value = value * real[:, :, None].to(value.dtype)
            layers.append(value.reshape(*value.shape[:2], heads, width // heads).sum((1, 3)))
        parts.append(torch.stack(layers, 1).double().cpu().numpy())
        explained.append(batch.explained)
        targets.extend(batch.targets)
    return HeadRelevance(texts, projections, np.concatenate(parts), np.concatenate(explained), targets)


def corpus_heads(
    explainer: TextExplainer,
    texts: Sequence[str],
    target: TextTarget = None,
    batch_size: int = 16,
    top: int | None = 10,
) -> pd.DataFrame:
    """The attention heads that carry the decision on a corpus, most relevant first.

    Per (layer, head), over the texts: ``mean_relevance`` (signed: for or against the explained
    output), ``mean_abs_relevance`` and ``share``, the head's part of the summed mean absolute
    relevance of all heads (shares of all heads sum to 1). Sorted by ``share``, descending; the
    first ``top`` rows (None: all). Relevance per head as in :func:`head_relevance` (AttnLRP:
    Achtibat et al., ICML 2024; CRP: Achtibat et al., Nat. Mach. Intell. 2023). ``target``: None
    explains each text's predicted class.
    """
    import pandas as pd

    if top is not None and top < 1:
        raise ValueError(f"top must be >= 1 or None, got {top}")
    result = head_relevance(explainer, list(texts), target=target, batch_size=batch_size)
    mean = result.relevance.mean(0)
    mean_abs = np.abs(result.relevance).mean(0)
    total = mean_abs.sum()
    n_layers, heads = mean.shape
    frame = pd.DataFrame(
        {
            "layer_index": np.repeat(np.arange(n_layers), heads),
            "layer": np.repeat(np.asarray(result.layers, dtype=object), heads),
            "head": np.tile(np.arange(heads), n_layers),
            "mean_relevance": mean.reshape(-1),
            "mean_abs_relevance": mean_abs.reshape(-1),
            "share": (mean_abs / total).reshape(-1) if total > 0 else np.zeros(n_layers * heads),
        }
    )
    frame = frame.sort_values(["share", "layer_index", "head"], ascending=[False, True, True], kind="stable")
    frame = frame.reset_index(drop=True)
    return frame if top is None else frame.head(top)
