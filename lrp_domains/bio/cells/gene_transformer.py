"""A tiny BERT over gene tokens (Geneformer-style, optionally scGPT-style values) and its explainer.

A cell is a sentence of gene tokens (:mod:`lrp_domains.bio.cells.gene_tokens`): ``[CLS]``, then its
expressed genes by median-normalised expression, highest first. The model is a transformers
``BertForSequenceClassification`` (absolute position embeddings carry each gene's rank); with
``values=True`` a :class:`ValueEmbeddingBert` adds an ``nn.Embedding`` of per-cell expression
bins to each gene token's embedding (scGPT) and feeds the sum through ``inputs_embeds``.

:class:`GeneTransformerExplainer` explains it through the text machinery
(:meth:`lrp_domains.text.TextExplainer.attribute_sources`, the ``attnlrp``/``cp-lrp``
composites): relevance is read at every embedding output. **A gene's relevance is its token's**:
the relevance of the token's whole input vector, i.e. the sum over the embeddings that make it
(gene, position = rank, token type, value bin) at its position. The LayerNorm rule splits a
token's relevance among these summands in proportion to their contributions, a split that
depends on how the model happens to parameterise them; their sum is the token itself, which the
deletion test removes. Genes outside a cell's sentence (not expressed, or beyond ``max_genes``)
get 0. The ``[CLS]`` token's relevance (its embeddings) is not a gene's: it stays in ``delta``
(= explained score - summed gene relevance), together with what biases absorb;
:meth:`GeneTransformerExplainer.explain_tokens` returns it separately.

Which expression ranks the genes (pbmc68k_reduced): its ``.X`` is z-scaled (zeros are gone and
every gene has mean 0), so the ranking uses ``.raw``, which holds the same 765 genes as
log1p-normalised counts; ``expm1`` gives back the per-cell normalised counts that Geneformer
ranks after dividing by each gene's median (:func:`expression_matrix`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from lrp_domains.bio.cells.gene_tokens import SPECIAL_TOKENS, CellSentences, GeneVocabulary, cell_sentences
from lrp_domains.bio.cells.genes import RUN_COLUMNS as GENE_RUN_COLUMNS
from lrp_domains.bio.cells.genes import GeneExplanation
from lrp_domains.core.composite import Composite
from lrp_domains.core.engine.targets import resolve_targets, select_target
from lrp_domains.domains import DomainExplainer, Reader
from lrp_domains.errors import InputError
from lrp_domains.options import Option

ClassTarget = Union[None, int, str, Sequence[Union[int, str]], np.ndarray, torch.Tensor, Callable]


# -- data ---------------------------------------------------------------------------------------
def expression_matrix(
    data: Any, layer: str | None = None, unlog: bool | None = None
) -> tuple[np.ndarray, list[str] | None, list[str]]:
    """Non-negative expression ``(cells x genes)``, gene names (None for bare arrays) and cell names.

    AnnData: ``layers[layer]`` if given, else ``.X`` unless it has negative values (z-scaled, as
    ``pbmc68k_reduced``), then ``.raw``. ``unlog`` applies ``expm1`` (log1p values back to
    normalised counts); None: only for ``.raw``, where scanpy keeps log1p-normalised data.
    DataFrames (columns = genes) and arrays are used as given (``expm1`` if ``unlog``).
    """
    from_raw = False
    if hasattr(data, "obs_names") and hasattr(data, "var_names"):
        cells = [str(c) for c in data.obs_names]
        if layer is not None:
            if layer not in data.layers:
                raise InputError(f"no layer {layer!r}; the AnnData has {list(data.layers)}")
            matrix, genes = data.layers[layer], list(map(str, data.var_names))
        else:
            matrix, genes = data.X, list(map(str, data.var_names))
            if data.raw is not None and _has_negative(matrix):
                matrix, genes, from_raw = data.raw.X, list(map(str, data.raw.var_names)), True
    elif isinstance(data, pd.DataFrame):
        matrix, genes, cells = data.to_numpy(), [str(c) for c in data.columns], [str(i) for i in data.index]
    else:
        matrix = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else data
        genes = None
        cells = [str(i) for i in range(np.shape(matrix)[0])] if np.ndim(matrix) == 2 else []
    values = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
    try:
        values = values.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"expression must be numbers (cells x genes): {error}") from None
    if values.ndim != 2:
        raise InputError(f"expression must be 2-D (cells x genes), got shape {values.shape}")
    if unlog or (unlog is None and from_raw):
        values = np.expm1(values)
    return values, genes, cells


def _has_negative(matrix: Any) -> bool:
    from scipy import sparse

    data = matrix.data if sparse.issparse(matrix) else np.asarray(matrix)
    return bool((np.asarray(data) < 0).any())


def align_genes(
    values: np.ndarray, genes: list[str] | None, vocab: GeneVocabulary, unknown: str = "error"
) -> np.ndarray:
    """``values`` with one column per vocabulary gene (vocabulary order); vocabulary genes the data
    lacks are 0 (not expressed). Data genes outside the vocabulary are an InputError naming them,
    or dropped with ``unknown="ignore"`` (as Geneformer's tokenizer drops genes it has no token for)."""
    if unknown not in ("error", "ignore"):
        raise InputError(f"unknown must be 'error' or 'ignore', got {unknown!r}")
    if genes is None:
        if values.shape[1] != len(vocab.genes):
            raise InputError(
                f"an array needs one column per vocabulary gene ({len(vocab.genes)}, in its order), got "
                f"shape {values.shape}; pass an AnnData or a DataFrame to match genes by name"
            )
        return values
    index = pd.Index(genes)
    if index.has_duplicates:
        raise InputError(
            f"the data names genes twice ({', '.join(index[index.duplicated()].unique()[:8])}); make them unique"
        )
    outside = [g for g in genes if g not in vocab]
    if outside and unknown == "error":
        raise InputError(
            f"{len(outside)} of the data's genes are not in the model's vocabulary "
            f"({', '.join(outside[:8])}{', ...' if len(outside) > 8 else ''}); check gene identifiers "
            "(symbols vs Ensembl IDs) or pass unknown='ignore' to leave them out of the sentences"
        )
    position = index.get_indexer(vocab.genes)
    aligned = np.zeros((values.shape[0], len(vocab.genes)))
    present = position >= 0
    if not present.any():
        raise InputError("none of the data's genes is in the model's vocabulary; check gene identifiers")
    aligned[:, present] = values[:, position[present]]
    return aligned


# -- the model ----------------------------------------------------------------------------------
class ValueEmbeddingBert(nn.Module):
    """A BERT classifier whose gene token embeddings get a value-bin embedding added (scGPT,
    Cui et al. 2024): ``bert(inputs_embeds=word(input_ids) + value(value_ids))``. The addition
    needs no rule (relevance splits over the summands by the gradient x input identity); both
    embeddings are ``nn.Embedding`` modules, so their relevance is read like the text's."""

    def __init__(self, bert: nn.Module, n_bins: int) -> None:
        super().__init__()
        self.bert = bert
        self.config = bert.config
        self.value_embeddings = nn.Embedding(n_bins + 1, bert.config.hidden_size, padding_idx=0)
        with torch.no_grad():  # BERT's embedding scale; torch's N(0, 1) default would drown the gene embeddings
            self.value_embeddings.weight.normal_(0.0, bert.config.initializer_range)
            self.value_embeddings.weight[0].zero_()

    def get_input_embeddings(self) -> nn.Module:
        """The gene (word) embeddings."""
        return self.bert.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        value_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Any:
        """BERT on gene embeddings (``inputs_embeds``, or those of ``input_ids``) plus value embeddings."""
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if value_ids is not None:
            inputs_embeds = inputs_embeds + self.value_embeddings(value_ids)
        return self.bert(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels)


def build_gene_transformer(
    vocab: GeneVocabulary,
    n_classes: int,
    values: bool = False,
    max_genes: int = 256,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate: int = 128,
    n_bins: int = 16,
    dropout: float = 0.1,
    classes: Sequence[str] | None = None,
) -> nn.Module:
    """A tiny ``BertForSequenceClassification`` over ``vocab``'s tokens (``max_genes + 1``
    positions, one token type), wrapped in :class:`ValueEmbeddingBert` when ``values``."""
    from transformers import BertConfig, BertForSequenceClassification

    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(n_classes)]
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_genes + 1,
        type_vocab_size=1,
        pad_token_id=vocab.pad_id,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        num_labels=n_classes,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    bert = BertForSequenceClassification(config)
    return ValueEmbeddingBert(bert, n_bins) if values else bert


def model_settings(model: nn.Module) -> dict[str, Any]:
    """``max_genes``, ``values`` and ``n_bins`` of a gene transformer."""
    values = isinstance(model, ValueEmbeddingBert)
    return {
        "max_genes": int(model.config.max_position_embeddings) - 1,
        "values": values,
        "n_bins": int(model.value_embeddings.num_embeddings) - 1 if values else None,
    }


@dataclass
class TrainedGeneTransformer:
    """A trained gene transformer: model (eval mode), vocabulary, classes, ``unlog`` (how its
    expression was read, see :func:`expression_matrix`), held-out cells and metrics."""

    model: nn.Module
    vocab: GeneVocabulary
    classes: list[str]
    unlog: bool | None = None
    test_cells: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def explainer(self, composite: str | Composite = "attnlrp", strict: bool = False) -> GeneTransformerExplainer:
        """Its :class:`GeneTransformerExplainer`."""
        return GeneTransformerExplainer(
            self.model, self.vocab, self.classes, composite=composite, unlog=self.unlog, strict=strict
        )

    def save(self, folder: str | Path) -> Path:
        """Weights (safetensors) and a JSON sidecar (architecture, vocabulary, classes, metrics)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        bert = self.model.bert if isinstance(self.model, ValueEmbeddingBert) else self.model
        config = bert.config
        architecture = {
            "hidden": config.hidden_size,
            "layers": config.num_hidden_layers,
            "heads": config.num_attention_heads,
            "intermediate": config.intermediate_size,
            **model_settings(self.model),
        }
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(folder / "model.safetensors"))
        (folder / "model.json").write_text(
            json.dumps(
                {
                    "architecture": architecture,
                    "vocabulary": self.vocab.to_dict(),
                    "classes": self.classes,
                    "unlog": self.unlog,
                    "test_cells": self.test_cells,
                    "metrics": self.metrics,
                },
                indent=1,
            )
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TrainedGeneTransformer:
        """Read what :meth:`save` wrote (an InputError when the folder lacks it)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / "model.json").is_file() or not (folder / "model.safetensors").is_file():
            raise InputError(
                f"{folder} holds no gene transformer (model.json and model.safetensors); train one with "
                "lrp_domains.bio.cells.gene_transformer.train_gene_transformer and save it there"
            )
        meta = json.loads((folder / "model.json").read_text())
        vocab = GeneVocabulary.from_dict(meta["vocabulary"])
        arch = meta["architecture"]
        model = build_gene_transformer(
            vocab,
            len(meta["classes"]),
            values=arch["values"],
            max_genes=arch["max_genes"],
            hidden=arch["hidden"],
            layers=arch["layers"],
            heads=arch["heads"],
            intermediate=arch["intermediate"],
            n_bins=arch["n_bins"] or 16,
            classes=meta["classes"],
        )
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        return cls(model.eval(), vocab, list(meta["classes"]), meta["unlog"], meta["test_cells"], meta["metrics"])


def train_gene_transformer(
    adata: Any,
    labels_key: str = "bulk_labels",
    seed: int = 0,
    values: bool = False,
    max_genes: int = 256,
    epochs: int = 40,
    batch_size: int = 32,
    lr: float = 2e-3,
    test_fraction: float = 0.2,
    log: Callable[[str], None] | None = None,
    **architecture: Any,
) -> TrainedGeneTransformer:
    """Train a tiny gene transformer on CPU (a few minutes on ``pbmc68k_reduced``).

    Stratified split (``test_fraction`` held out, ``seed``); the vocabulary's medians come from
    the training cells only; AdamW, class-balanced cross-entropy, linear warm-up then decay.
    ``metrics`` reports held-out accuracy and balanced accuracy.
    """
    values_matrix, genes, cells = expression_matrix(adata)
    if labels_key not in adata.obs:
        raise InputError(f"no column {labels_key!r} in adata.obs; it has {list(adata.obs.columns)}")
    labels = adata.obs[labels_key].astype(str).to_numpy()
    classes = list(adata.obs[labels_key].astype("category").cat.categories.astype(str))
    y = np.array([classes.index(v) for v in labels])
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(y == c))
        test[members[: int(round(len(members) * test_fraction))]] = True
    vocab = GeneVocabulary.fit(values_matrix[~test], genes)
    sentences = cell_sentences(values_matrix, vocab, max_genes=max_genes, values=values, cells=cells)
    torch.manual_seed(seed)
    model = build_gene_transformer(
        vocab, len(classes), values=values, max_genes=max_genes, classes=classes, **architecture
    )
    train_index = np.flatnonzero(~test)
    counts = np.bincount(y[train_index], minlength=len(classes)).astype(np.float64)
    weight = torch.tensor(len(train_index) / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * -(-len(train_index) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    targets = torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = train_index[torch.randperm(len(train_index), generator=generator).numpy()]
        total = 0.0
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            inputs = _rows(sentences, rows)
            logits = model(**inputs).logits
            loss = loss_fn(logits, targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        if log is not None and (epoch + 1) % 10 == 0:
            log(f"epoch {epoch + 1}: training loss {total / len(order):.3f}")
    model.eval()
    predicted = predict(model, sentences).argmax(1).numpy()
    recall = [float((predicted[test & (y == c)] == c).mean()) for c in range(len(classes)) if (test & (y == c)).any()]
    metrics = {
        "test_accuracy": float((predicted[test] == y[test]).mean()),
        "test_balanced_accuracy": float(np.mean(recall)),
        "train_accuracy": float((predicted[~test] == y[~test]).mean()),
        "training_seconds": time.perf_counter() - start,
        "epochs": epochs,
        "seed": seed,
        "max_genes": max_genes,
        "values": values,
        "threads": torch.get_num_threads(),
    }
    return TrainedGeneTransformer(model, vocab, classes, None, [cells[i] for i in np.flatnonzero(test)], metrics)


def _rows(sentences: CellSentences, rows: np.ndarray) -> dict[str, torch.Tensor]:
    index = torch.as_tensor(rows)
    picked = CellSentences(
        sentences.input_ids[index],
        sentences.attention_mask[index],
        None if sentences.value_ids is None else sentences.value_ids[index],
        sentences.truncated,
    )
    return picked.model_inputs()


def predict(model: nn.Module, sentences: CellSentences, batch_size: int = 64) -> torch.Tensor:
    """Logits ``(cells, classes)`` without gradients (eval mode for the call, mode restored)."""
    from lrp_domains.core.engine.attribution import eval_mode

    parts = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            parts.append(model(**sentences.model_inputs(start, start + batch_size)).logits.float())
    return torch.cat(parts)


# -- the explainer ------------------------------------------------------------------------------
def tokens_to_genes(input_ids: torch.Tensor, scores: torch.Tensor, n_genes: int) -> np.ndarray:
    """Token scores ``(N, T)`` as ``(N, n_genes)``: each gene token's score at its gene (a gene
    appears at most once per sentence), 0 for genes outside the sentence; special tokens dropped."""
    width = scores.shape[1]
    ids = input_ids[:, :width].numpy()
    out = np.zeros((ids.shape[0], n_genes))
    rows, cols = np.nonzero(ids >= len(SPECIAL_TOKENS))
    out[rows, ids[rows, cols] - len(SPECIAL_TOKENS)] = scores.double().numpy()[rows, cols]
    return out


@dataclass
class GeneTokens:
    """Token-level relevance: ``sentences``, ``relevance`` ``(N, T)`` per token (all its
    embeddings), ``sources`` (per embedding module, ``(N, T)``), ``logits``, ``explained`` and
    ``target`` (None for callables)."""

    sentences: CellSentences
    relevance: torch.Tensor
    sources: dict[str, torch.Tensor]
    logits: torch.Tensor
    explained: torch.Tensor
    target: torch.Tensor | None


class GeneTransformerExplainer(DomainExplainer):
    """Explain a gene transformer's cell classification gene by gene (see the module docstring).

    Parameters
    ----------
    model:
        From :func:`build_gene_transformer` (a ``BertForSequenceClassification`` or a
        :class:`ValueEmbeddingBert`); explained in eval mode and returned unchanged.
    vocab:
        Its :class:`~lrp_domains.bio.cells.gene_tokens.GeneVocabulary` (token ids and training medians).
    classes:
        Output names (default: the config's ``id2label``).
    composite:
        ``"attnlrp"`` (default) or ``"cp-lrp"`` (the text composites), or a Composite.
    unlog:
        How expression is read (:func:`expression_matrix`); as in training.
    strict:
        Raise when the model runs an operation no rule covers.
    """

    kind: ClassVar[str] = "gene-transformer"
    item: ClassVar[str] = "cell"
    default_composite: ClassVar[str] = "attnlrp"
    run_options: ClassVar[dict[str, Any]] = {"target": None, "batch_size": 32, "unknown": "error"}
    option_types: ClassVar[dict[str, Option]] = {"unknown": Option("choice", ("error", "ignore"))}
    columns: ClassVar[tuple[str, ...]] = GENE_RUN_COLUMNS
    report: ClassVar[str] = "lrp_domains.report.genes:write_gene_report"

    def __init__(
        self,
        model: nn.Module,
        vocab: GeneVocabulary,
        classes: Sequence[str] | None = None,
        composite: str | Composite = "attnlrp",
        unlog: bool | None = None,
        strict: bool = False,
    ) -> None:
        from lrp_domains.text.explainer import TextExplainer

        if not isinstance(vocab, GeneVocabulary):
            raise TypeError(f"vocab must be a GeneVocabulary, got {type(vocab).__name__}")
        if getattr(model, "config", None) is None or model.config.vocab_size != len(vocab):
            raise InputError(
                f"the model's vocabulary ({getattr(getattr(model, 'config', None), 'vocab_size', None)} "
                f"tokens) does not match the gene vocabulary ({len(vocab)} tokens)"
            )
        self.model = model
        self.vocab = vocab
        self.unlog = unlog
        self.text = TextExplainer(model, None, composite=composite, labels=classes, strict=strict, decoder=False)
        self.composite = self.text.composite
        self.classes = self.text.labels
        self.options = model_settings(model)

    @classmethod
    def from_options(
        cls, model: str | None = None, weights: str | None = None, composite: str | None = None
    ) -> GeneTransformerExplainer:
        """A gene transformer saved by :meth:`TrainedGeneTransformer.save` (``--model FOLDER``)."""
        from lrp_domains.models import refuse_weights

        refuse_weights(weights, "a gene transformer's folder")
        if model is None:
            raise InputError(
                "no default gene transformer ships with lrp-domains: give --model FOLDER, a folder "
                "written by TrainedGeneTransformer.save (e.g. the cache of `lrp-domains bench genes`)"
            )
        trained = TrainedGeneTransformer.load(model)
        return trained.explainer(composite or cls.default_composite)

    # -- explanation -----------------------------------------------------------------------------
    def sentences(self, data: Any, layer: str | None = None, unknown: str = "error") -> tuple[CellSentences, list[str]]:
        """Cell sentences of ``data`` (AnnData, DataFrame, or an array in vocabulary order) and cell names."""
        values, genes, cells = expression_matrix(data, layer, self.unlog)
        aligned = align_genes(values, genes, self.vocab, unknown)
        if not len(cells):
            raise InputError("no cells given")
        sentences = cell_sentences(
            aligned,
            self.vocab,
            max_genes=self.options["max_genes"],
            values=self.options["values"],
            n_bins=self.options["n_bins"] or 16,
            cells=cells,
        )
        return sentences, cells

    def explain_tokens(self, sentences: CellSentences, target: ClassTarget = None, batch_size: int = 32) -> GeneTokens:
        """Relevance per token of ``sentences`` (``[CLS]`` included) for one class score per cell."""
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        targets = resolve_targets(target, len(sentences), self.classes)
        width = sentences.input_ids.shape[1]
        relevance, logits, explained, chosen = [], [], [], []
        sources: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(sentences), batch_size):
            stop = min(start + batch_size, len(sentences))
            part = targets[start:stop] if isinstance(targets, torch.Tensor) else targets
            found, output = self.text.attribute_sources(sentences.model_inputs(start, stop), target=part)
            values, index = select_target(output.detach(), part)
            padded = {name: nn.functional.pad(v.double().cpu(), (0, width - v.shape[1])) for name, v in found.items()}
            for name, value in padded.items():
                sources.setdefault(name, []).append(value)
            relevance.append(sum(padded.values()))
            logits.append(output.detach().double().cpu())
            explained.append(values.double().cpu())
            chosen.append(None if index is None else index.cpu())
        return GeneTokens(
            sentences,
            torch.cat(relevance),
            {k: torch.cat(v) for k, v in sources.items()},
            torch.cat(logits),
            torch.cat(explained),
            None if chosen[0] is None else torch.cat(chosen),
        )

    def gene_relevance(self, tokens: GeneTokens) -> np.ndarray:
        """``(cells, vocabulary genes)``: each gene token's relevance at its gene; 0 elsewhere."""
        return tokens_to_genes(tokens.sentences.input_ids, tokens.relevance, len(self.vocab.genes))

    def explain(
        self,
        data: Any,
        target: ClassTarget = None,
        batch_size: int = 32,
        layer: str | None = None,
        unknown: str = "error",
    ) -> GeneExplanation:
        """Relevance of every vocabulary gene for one class score per cell (0 for genes outside its
        sentence); ``delta`` holds the ``[CLS]`` token's relevance and what biases absorb.

        ``target``: None (each cell's predicted class), a class name or index, one per cell, or
        a callable on the logits."""
        sentences, cells = self.sentences(data, layer, unknown)
        tokens = self.explain_tokens(sentences, target, batch_size)
        relevance = self.gene_relevance(tokens)
        classes = self.classes or [str(i) for i in range(tokens.logits.shape[1])]
        output = pd.DataFrame(tokens.logits.numpy(), index=cells, columns=classes)
        explained = tokens.explained.numpy()
        return GeneExplanation(
            relevance=pd.DataFrame(relevance, index=cells, columns=self.vocab.genes),
            output=output,
            prediction=output.idxmax(axis=1),
            target=None
            if tokens.target is None
            else pd.Series([classes[i] for i in tokens.target.tolist()], index=cells, name="target"),
            explained=pd.Series(explained, index=cells, name="explained"),
            delta=pd.Series(explained - relevance.sum(1), index=cells, name="delta"),
            composite=self.composite.name,
            target_given=target is not None,
        )

    # -- the contract (runs) ----------------------------------------------------------------
    def reader(self, path: str | Path, column: str | None = None) -> Reader:
        """Cells of ``.h5ad`` (backed mode) or samples of a ``.csv``/``.tsv`` table (non-negative
        expression, see :mod:`lrp_domains.bio.cells.readers`); ``column``: a label column whose value per
        cell is the class explained for it."""
        from lrp_domains.bio.cells.readers import cells_reader

        return cells_reader(path, column)

    def explain_batch(
        self,
        ids: Sequence[str],
        items: Any,
        first_row: int = 0,
        target: ClassTarget = None,
        batch_size: int = 32,
        unknown: str = "error",
    ) -> GeneExplanation:
        """Explain one shard's cells (a cells x genes table; with labels, each cell's label)."""
        from lrp_domains.bio.cells.readers import labeled_target

        data, target = labeled_target(items, target)
        return self.explain(data, target=target, batch_size=batch_size, unknown=unknown)

    @classmethod
    def report_context(cls, manifest: dict[str, Any]) -> dict[str, Any]:
        """As the expression explainer's (:func:`~lrp_domains.bio.cells.genes.gene_report_context`)."""
        from lrp_domains.bio.cells.genes import gene_report_context

        return gene_report_context(manifest)

    @classmethod
    def result_from_rows(cls, rows: Any, settings: dict[str, Any]) -> GeneExplanation:
        """The gene explanation of a run's rows (:func:`~lrp_domains.bio.cells.genes.explanation_from_rows`)."""
        from lrp_domains.bio.cells.genes import explanation_from_rows

        return explanation_from_rows(rows, settings)

    def result_rows(self, result: GeneExplanation, ids: Sequence[str]) -> dict[str, list]:
        """Per cell: prediction, target and the relevance of each vocabulary gene (names in the manifest)."""
        from lrp_domains.bio.cells.genes import run_rows

        return run_rows(result, len(ids))

    def settings(self) -> dict[str, Any]:
        """The vocabulary's genes, the classes and the sentence settings."""
        return {"genes": list(self.vocab.genes), "classes": self.classes, **self.options, "unlog": self.unlog}
