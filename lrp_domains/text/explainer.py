"""``TextExplainer``: relevance of tokens and words for Hugging Face classifiers and decoders.

Texts are tokenized and padded per batch; :func:`lrp_domains.core.engine.attribution.explain_batches`
runs the forward and backward passes, reading relevance at every ``nn.Embedding`` output (word,
position and token-type embeddings); the word embedding's relevance summed over the hidden size
is each token's relevance, and tokens are grouped into words by character offsets.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Union

import numpy as np
import torch
from torch import nn

from lrp_domains.core.composite import Composite
from lrp_domains.core.engine.attribution import explain, explain_batches, model_device, resolve_composite
from lrp_domains.core.engine.result import Explanation
from lrp_domains.core.engine.targets import Contrast, parse_contrast, resolve_targets
from lrp_domains.domains import DomainExplainer, Reader
from lrp_domains.errors import InputError
from lrp_domains.models import pretrained_errors, pretrained_tokenizer
from lrp_domains.text import composites as _text_composites  # noqa: F401  (registers attnlrp, cp-lrp)
from lrp_domains.text.result import TEXT_RUN_COLUMNS, TextExplanation, explanations_from_rows, text_rows
from lrp_domains.text.words import group_words

TextTarget = Union[None, int, str, Sequence[Union[int, str]], Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class _Encoded:
    """One tokenized text: ids, offsets into ``text``, special-token flags, tokens dropped."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[bool]
    token_type_ids: list[int] | None = None
    truncated: int = 0


#: Keywords of :meth:`TextExplainer.from_pretrained` that are the explainer's, not transformers'.
_EXPLAINER_OPTIONS = ("labels", "max_length", "strict", "decoder")


def is_causal_lm(model: nn.Module) -> bool:
    """True for transformers models that generate text (``GenerationMixin``: ``...ForCausalLM``,
    ``GPT2LMHeadModel``), False for classifiers."""
    try:
        from transformers import GenerationMixin
    except ImportError:  # pragma: no cover - transformers comes with the text extra
        return False
    return isinstance(model, GenerationMixin) and hasattr(model, "get_output_embeddings")


def usable_positions(model: nn.Module) -> int | None:
    """How many tokens the model's position embeddings take: ``max_position_embeddings``, less the
    offset of models whose positions start after the padding index (RoBERTa, XLM-R, CamemBERT,
    MPNet, ESM with learned positions...: position ids run from ``padding_idx + 1``, so
    ``max_position_embeddings - padding_idx - 1`` tokens fit). Recognised by their learned position
    embedding having a ``padding_idx``; None when the config names no limit."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int):
        return None
    for name, module in model.named_modules():
        if (
            name.rsplit(".", 1)[-1] == "position_embeddings"
            and isinstance(module, nn.Embedding)
            and module.padding_idx is not None
            and module.num_embeddings == limit
        ):
            return limit - module.padding_idx - 1
    return limit


class TextExplainer(DomainExplainer):
    """Explain a transformers model's predictions on text with AttnLRP or CP-LRP.

    Parameters
    ----------
    model:
        A sequence classifier (``...ForSequenceClassification``) or a causal language model
        (``...ForCausalLM``, ``GPT2LMHeadModel``). It is explained in eval mode and returned
        unchanged.
    tokenizer:
        Its (fast) tokenizer: character offsets map tokens to words. None for models explained on
        token ids only (:meth:`attribute`, :meth:`attribute_sources`), e.g. gene-token models.
    composite:
        ``"attnlrp"`` (default), ``"cp-lrp"``, or a :class:`~lrp_domains.Composite`.
    labels:
        Class names for classifiers (default: the model config's ``id2label``).
    max_length:
        Longest input in tokens (default: what the tokenizer and the position embeddings allow);
        longer texts are truncated with a warning, and results record how many tokens were dropped.
    strict:
        Raise when the model runs an operation no rule covers (default: warn).
    decoder:
        Whether the model is a causal LM (default: detected, see :func:`is_causal_lm`).
    """

    kind: ClassVar[str] = "text"
    item: ClassVar[str] = "text"
    default_composite: ClassVar[str] = "attnlrp"
    run_options: ClassVar[dict[str, Any]] = {"target": None, "batch_size": 16, "ledger": False}
    columns: ClassVar[tuple[str, ...]] = TEXT_RUN_COLUMNS
    report: ClassVar[str] = "lrp_domains.report.text:write_text_report"
    #: Also keep the word embedding's relevance per hidden unit, ``(tokens, hidden)``, in each
    #: result's ``extra["word_embedding_relevance"]`` (the DNA language model explainer reads it).
    keep_embedding_vectors: bool = False

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        composite: str | Composite = "attnlrp",
        labels: Sequence[str] | None = None,
        max_length: int | None = None,
        strict: bool = False,
        decoder: bool | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.composite = resolve_composite(composite)
        self.strict = strict
        if tokenizer is not None and not getattr(tokenizer, "is_fast", False):
            raise TypeError("TextExplainer needs a fast tokenizer (character offsets); load it with use_fast=True")
        self.is_decoder = is_causal_lm(model) if decoder is None else bool(decoder)
        config = getattr(model, "config", None)
        if labels is None and not self.is_decoder and config is not None:
            id2label = getattr(config, "id2label", None) or {}
            labels = [id2label.get(i, str(i)) for i in range(getattr(config, "num_labels", len(id2label)))]
        self.labels = list(labels) if labels is not None else None
        limits = [
            getattr(tokenizer, "model_max_length", None),
            usable_positions(model),
            getattr(config, "n_positions", None),
            max_length,
        ]
        valid = [int(v) for v in limits if isinstance(v, int) and 0 < v < 10**7]
        self.max_length = min(valid) if valid else None
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        names = {id(m): n for n, m in model.named_modules()}
        self._word_source = names.get(id(embeddings)) if embeddings is not None else None
        import inspect

        self._accepts_token_types = "token_type_ids" in inspect.signature(model.forward).parameters

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, composite: str | Composite = "attnlrp", **kwargs: Any
    ) -> TextExplainer:
        """Load a classifier or causal LM and its tokenizer with transformers' ``from_pretrained``
        (a local folder works offline; a hub name needs the network).

        The explainer's own options (``labels``, ``max_length``, ``strict``, ``decoder``) go to the
        explainer; every other keyword goes to transformers' ``from_pretrained`` (e.g. ``revision``)."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        options = {key: kwargs.pop(key) for key in _EXPLAINER_OPTIONS if key in kwargs}
        name = str(name_or_path)
        with pretrained_errors(name):
            config = AutoConfig.from_pretrained(name)
            causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in (config.architectures or []))
            loader = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
            model = loader.from_pretrained(name, **kwargs).eval()
            tokenizer = pretrained_tokenizer(name, AutoTokenizer)
        return cls(model, tokenizer, composite=composite, **options)

    @classmethod
    def default(cls, composite: str | Composite = "attnlrp", device: str | torch.device | None = None) -> TextExplainer:
        """The default sentiment model: MiniLM fine-tuned on SST-2, built offline (see README)."""
        from lrp_domains.text.default_model import load_default_model

        model, tokenizer, labels = load_default_model(device=device)
        return cls(model, tokenizer, composite=composite, labels=labels)

    @classmethod
    def from_options(
        cls, model: str | None = None, weights: str | None = None, composite: str | None = None
    ) -> TextExplainer:
        """The default sentiment model, or a model folder or hub name (``--model``)."""
        from lrp_domains.models import as_model_option, refuse_weights

        refuse_weights(weights, "a text model folder")
        if model is None:
            return cls.default(composite=composite or cls.default_composite)

        with as_model_option(model):
            return cls.from_pretrained(model, composite=composite or cls.default_composite)

    # -- public API --------------------------------------------------------------------------
    def explain(
        self,
        text_or_texts: str | Sequence[str],
        target: TextTarget = None,
        batch_size: int = 16,
        progress: bool = False,
        ids: Sequence[str] | None = None,
        ledger: bool = False,
    ) -> TextExplanation | list[TextExplanation]:
        """Relevance of each token and word for a class score (classifiers) or, for causal LMs,
        for the next-token logit (as :meth:`explain_next_token`).

        ``target``: None (the predicted class), a label name, a class index, one of those per
        text, or a callable ``logits -> (N,)`` (e.g. ``lambda out: out[:, 1] - out[:, 0]``).
        ``ids`` name the texts in messages (default: their positions). Batched results equal
        single ones: padding is masked out. ``ledger``: also record where ``delta`` went
        (:attr:`TextExplanation.ledger`).
        """
        if self.is_decoder:
            return self.explain_next_token(
                text_or_texts, target=target, batch_size=batch_size, progress=progress, ids=ids, ledger=ledger
            )
        texts, single = _as_list(text_or_texts)
        encoded = self.encode(texts, ids)
        targets, output = self.resolve_targets(target, len(texts))
        results = self._run(encoded, targets, batch_size, progress, output, self._classifier_info, ledger)
        return results[0] if single else results

    def explain_next_token(
        self,
        prompt: str | Sequence[str],
        target: int | str | None | Sequence = None,
        batch_size: int = 16,
        progress: bool = False,
        ids: Sequence[str] | None = None,
        ledger: bool = False,
    ) -> TextExplanation | list[TextExplanation]:
        """Relevance of the prompt's tokens for the logit of the next token (causal LMs).

        ``target``: None (the most likely next token), a token string (one token of the
        vocabulary, e.g. ``" Paris"`` or ``"ĠParis"``) or a token id; or one per prompt; or a
        callable on the next-token logits (see :meth:`resolve_targets`).
        """
        self._require_decoder("explain_next_token")
        prompts, single = _as_list(prompt)
        encoded = self.encode(prompts, ids)
        targets, output = self.resolve_targets(target, len(prompts))
        results = self._run(encoded, targets, batch_size, progress, output, self._next_token_info, ledger)
        return results[0] if single else results

    def resolve_targets(self, target: TextTarget, n: int) -> tuple[torch.Tensor | Callable | None, Callable | None]:
        """What each of ``n`` texts explains, as :meth:`explain` and :meth:`explain_next_token`
        read ``target``: ``(targets, output)`` for :func:`~lrp_domains.core.engine.attribution.explain`,
        ``targets`` None, a callable or ``n`` indices, and ``output`` the hook that picks the explained
        logits (None: the model's logits).

        Classifiers: None (the predicted class), a label name, a class index, one of those per text,
        or a callable on the logits. Causal LMs, the next token after each prompt (the logits at its
        last token): None (the most likely one), a token string (one token of the vocabulary) or id,
        one per prompt (all or none None), or a callable on the next-token logits. Contrasts:
        ``"positive vs negative"`` (classifiers; also ``"positive-negative"`` when both are labels),
        ``" Paris vs  London"`` (a token against a foil, each side as written, its spaces kept)."""
        if not self.is_decoder:
            return resolve_targets(target, n, self.labels or None), None
        if target is None or callable(target):
            return target, _last_position
        if isinstance(target, str) and (contrast := parse_contrast(target, self._token_id, False, dash=False)):
            return contrast, _last_position  # " Paris vs  London": a token against a foil
        if hasattr(target, "tolist") and not isinstance(target, (str, int)):
            target = target.tolist()
        chosen = [target] * n if isinstance(target, (int, str)) else list(target)
        if len(chosen) != n:
            raise ValueError(f"got {len(chosen)} targets for {n} prompts")
        if all(t is None for t in chosen):
            return None, _last_position
        if any(t is None for t in chosen):
            raise ValueError("give a target for every prompt, or for none (None: the most likely next token)")
        return resolve_targets([self._token_id(t) for t in chosen], n), _last_position

    def explain_continuation(self, prompt: str, continuation: str) -> TextExplanation:
        """Relevance of every token for the summed log-probability of ``continuation`` after
        ``prompt`` (teacher forcing); ``extra["continuation"]`` flags the continuation's tokens."""
        self._require_decoder("explain_continuation")
        head = self._encode(prompt, "the prompt")
        tail = self.tokenizer(continuation, add_special_tokens=False, return_offsets_mapping=True)
        if not tail["input_ids"]:
            raise ValueError("the continuation is empty: give at least one token to score")
        shift = len(prompt)
        encoded = _Encoded(
            text=prompt + continuation,
            ids=head.ids + list(tail["input_ids"]),
            offsets=head.offsets + [(s + shift, e + shift) for s, e in tail["offset_mapping"]],
            special=head.special + [False] * len(tail["input_ids"]),
        )
        if self.max_length is not None and len(encoded.ids) > self.max_length:
            raise ValueError(
                f"prompt and continuation have {len(encoded.ids)} tokens; the model takes at most {self.max_length}"
            )
        n_prompt = len(head.ids)
        (result,) = self._run(
            [encoded],
            torch.zeros(1, dtype=torch.long),
            1,
            False,
            _continuation_log_probability(n_prompt),
            self._continuation_info(n_prompt),
        )
        result.extra["continuation"] = [i >= n_prompt for i in range(len(encoded.ids))]
        return result

    def attribute(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        target: int | torch.Tensor | Callable | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower-level entry for classifiers on token tensors ``(N, T)``: the word-embedding
        relevance ``(N, T)`` for the target class (None: the predicted one; an index; one per
        example; or a callable on the logits) and the logits. One forward and backward pass."""
        if self.is_decoder:
            raise TypeError("attribute is for classifiers; use explain_next_token for causal language models")
        inputs = {"input_ids": input_ids}
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask
        if token_type_ids is not None and self._accepts_token_types:
            inputs["token_type_ids"] = token_type_ids
        if isinstance(target, torch.Tensor) and target.dim() == 0:
            target = int(target)
        result = explain(
            self.model,
            inputs,
            target=target,
            composite=self.composite,
            strict=self.strict,
            sources=self._sources(),
            check_delta=False,
        )
        return self._word_relevance(result).detach(), result.output

    def attribute_sources(
        self,
        inputs: dict[str, torch.Tensor],
        target: int | torch.Tensor | Callable | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """As :meth:`attribute`, for any keyword inputs of the model (token ids plus what a wrapper
        takes, e.g. binned expression values), returning the relevance at every embedding output
        summed over the hidden size, ``{module name: (N, T)}`` (word, position, token-type and any
        other ``nn.Embedding``), and the logits. One forward and backward pass."""
        if self.is_decoder:
            raise TypeError("attribute_sources is for classifiers; use explain_next_token for causal language models")
        if isinstance(target, torch.Tensor) and target.dim() == 0:
            target = int(target)
        result = explain(
            self.model,
            dict(inputs),
            target=target,
            composite=self.composite,
            strict=self.strict,
            sources=self._sources(),
            check_delta=False,
        )
        return {name: value.sum(-1).detach() for name, value in result.sources.items()}, result.output

    # -- the contract (runs) -----------------------------------------------------------------
    def reader(self, path: str | Path, column: str | None = None) -> Reader:
        """Texts of ``.txt``/``.csv``/``.tsv``/``.jsonl``/``.parquet`` (see :mod:`lrp_domains.files.tables`);
        ``column``: the text column (default ``text``)."""
        from lrp_domains.files.tables import TableRecords

        return TableRecords(path, column or "text", what="a text run")

    def explain_batch(
        self,
        ids: Sequence[str],
        items: Sequence[str],
        first_row: int = 0,
        target: TextTarget = None,
        batch_size: int = 16,
        ledger: bool = False,
    ) -> list[TextExplanation]:
        """Explain one shard's texts; an empty text is an InputError naming its row and id."""
        names = [f"row {first_row + i} (id {name!r})" for i, name in enumerate(ids)]
        for name, text in zip(names, items):
            if not str(text).strip():
                raise InputError(f"{name} is an empty text; drop empty rows")
        return self.explain(list(items), target=target, batch_size=batch_size, ids=names, ledger=ledger)

    def result_rows(self, result: list[TextExplanation], ids: Sequence[str]) -> dict[str, list]:
        """Output columns, in the order of :attr:`columns` (:func:`~lrp_domains.text.result.text_rows`)."""
        return text_rows(result)

    @classmethod
    def result_from_rows(cls, rows: Any, settings: dict[str, Any]) -> list[TextExplanation]:
        """The explanations of a run's rows (:func:`~lrp_domains.text.result.explanations_from_rows`)."""
        return explanations_from_rows(rows, str(settings.get("composite", "")))

    def settings(self) -> dict[str, Any]:
        """The labels and whether the model is a decoder."""
        return {"labels": self.labels, "decoder": self.is_decoder}

    # -- encoding ----------------------------------------------------------------------------
    def encode(self, texts: list[str], ids: Sequence[str] | None = None) -> list[_Encoded]:
        """The texts tokenized as they are explained (special tokens; truncated to
        :attr:`max_length` with a warning); ``ids`` name them in messages (default: positions)."""
        names = [f"text {i}" for i in range(len(texts))] if ids is None else [str(i) for i in ids]
        if len(names) != len(texts):
            raise ValueError(f"got {len(names)} ids for {len(texts)} texts")
        return [self._encode(text, name) for text, name in zip(texts, names)]

    def _tokenize(self, text: str, **kwargs: Any) -> _Encoded:
        enc = self.tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True, **kwargs)
        return _Encoded(
            text,
            list(enc["input_ids"]),
            [tuple(o) for o in enc["offset_mapping"]],
            [bool(s) for s in enc["special_tokens_mask"]],
            list(enc["token_type_ids"]) if "token_type_ids" in enc else None,
        )

    def _encode(self, text: str, name: str) -> _Encoded:
        if not isinstance(text, str):
            raise TypeError(f"{name} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise ValueError(f"{name} is empty; there is nothing to explain")
        encoded = self._tokenize(text)
        if self.max_length is not None and len(encoded.ids) > self.max_length:
            dropped = len(encoded.ids) - self.max_length
            warnings.warn(
                f"{name} has {len(encoded.ids)} tokens but the model takes {self.max_length}: truncated, "
                f"the last {dropped} tokens are not explained",
                stacklevel=4,
            )
            encoded = self._tokenize(text, truncation=True, max_length=self.max_length)
            encoded.truncated = dropped
        return encoded

    def _token_id(self, token: int | str) -> int:
        vocab_size = len(self.tokenizer)
        if isinstance(token, int):
            if not 0 <= token < max(vocab_size, getattr(self.model.config, "vocab_size", 0)):
                raise ValueError(f"token id {token} is out of range for a vocabulary of {vocab_size}")
            return token
        ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            return ids[0]
        direct = self.tokenizer.convert_tokens_to_ids(token)
        if isinstance(direct, int) and direct != self.tokenizer.unk_token_id:
            return direct
        raise ValueError(
            f"target {token!r} is {len(ids)} tokens {self.tokenizer.convert_ids_to_tokens(ids)}, not one; "
            "give a single token (string or id), or use explain_continuation for longer text"
        )

    def _require_decoder(self, what: str) -> None:
        if not self.is_decoder:
            raise TypeError(
                f"{what} is for causal language models; {type(self.model).__name__} is a classifier: use explain()"
            )

    # -- the forward/backward ----------------------------------------------------------------
    def _sources(self) -> tuple[type, ...]:
        return (nn.Embedding,)

    def model_inputs(self, batch: list[_Encoded], device: torch.device) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for encoded texts (:meth:`encode`), padded on the right to the
        longest: ``input_ids``, ``attention_mask`` and, where the model takes them, ``token_type_ids``."""
        width = max(len(e.ids) for e in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = np.full((len(batch), width), pad, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64)
        for row, e in enumerate(batch):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
            if e.token_type_ids is not None:
                types[row, : len(e.ids)] = e.token_type_ids
        inputs = {"input_ids": torch.from_numpy(ids).to(device), "attention_mask": torch.from_numpy(mask).to(device)}
        if self._accepts_token_types and batch[0].token_type_ids is not None:
            inputs["token_type_ids"] = torch.from_numpy(types).to(device)
        return inputs

    def _run(
        self,
        encoded: list[_Encoded],
        targets: torch.Tensor | Callable | None,
        batch_size: int,
        progress: bool,
        output: Callable | None,
        info: Callable,
        ledger: bool = False,
    ) -> list[TextExplanation]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = model_device(self.model)
        batches = [
            (
                self.model_inputs(encoded[start : start + batch_size], device),
                targets[start : start + batch_size] if isinstance(targets, torch.Tensor) else targets,
            )
            for start in range(0, len(encoded), batch_size)
        ]
        parts = explain_batches(
            self.model,
            batches,
            self.composite,
            strict=self.strict,
            progress=progress,
            output=output,
            sources=self._sources(),
            check_delta=False,
            total=len(batches),
            ledger=ledger,
        )
        results: list[TextExplanation] = []
        for start, part in zip(range(0, len(encoded), batch_size), parts):
            if not part.sources:
                raise RuntimeError("no embedding module ran: TextExplainer reads relevance at nn.Embedding outputs")
            chunk = encoded[start : start + batch_size]
            relevance = {name: value.sum(-1).double().cpu().numpy() for name, value in part.sources.items()}
            word_source = self._word_source if self._word_source in relevance else next(iter(relevance))
            explained = part.explained.detach().double().cpu().tolist()
            details = info(part, chunk)
            if isinstance(targets, Contrast):  # a callable leaves no index: name the contrast
                details = [{**detail, "target": str(targets)} for detail in details]
            results.extend(
                self._result(e, row, relevance, word_source, explained[row], details[row])
                for row, e in enumerate(chunk)
            )
            if part.ledger_rows is not None:
                for row in range(len(chunk)):
                    results[start + row].ledger_rows = part.ledger_rows.subset([row])
            if self.keep_embedding_vectors:  # per hidden unit, for callers that need more than the sum
                for row, e in enumerate(chunk):
                    results[start + row].extra["word_embedding_relevance"] = (
                        part.sources[word_source][row, : len(e.ids)].detach().cpu()
                    )
        return results

    def _word_relevance(self, result: Explanation) -> torch.Tensor:
        name = self._word_source if self._word_source in result.sources else next(iter(result.sources))
        return result.sources[name].sum(-1)

    def _result(
        self, e: _Encoded, row: int, relevance: dict[str, np.ndarray], word_source: str, explained: float, info: dict
    ) -> TextExplanation:
        n = len(e.ids)
        token_relevance = relevance[word_source][row, :n].copy()
        others = {
            name: torch.from_numpy(value[row, :n].copy()) for name, value in relevance.items() if name != word_source
        }
        spans, owner = group_words(e.text, e.offsets, e.special)
        owners = np.asarray(owner)
        inside = owners >= 0
        word_relevance = np.bincount(owners[inside], weights=token_relevance[inside], minlength=len(spans))
        used = np.unique(owners[inside])
        remap = np.full(len(spans) + 1, -1)
        remap[used] = np.arange(len(used))
        total = float(token_relevance.sum()) + sum(float(v.sum()) for v in others.values())
        return TextExplanation(
            text=e.text,
            tokens=self.tokenizer.convert_ids_to_tokens(e.ids),
            token_ids=list(e.ids),
            token_spans=list(e.offsets),
            special=list(e.special),
            token_relevance=torch.from_numpy(token_relevance),
            words=[e.text[spans[w][0] : spans[w][1]] for w in used],
            word_spans=[spans[w] for w in used],
            word_relevance=torch.from_numpy(word_relevance[used]),
            token_word=remap[owners].tolist(),
            embedding_relevance=others,
            prediction=info["prediction"],
            probabilities=info["probabilities"],
            target=info["target"],
            explained=explained,
            delta=explained - total,
            composite=self.composite.name,
            truncated=e.truncated,
        )

    # -- what is explained -------------------------------------------------------------------
    def _classifier_info(self, part: Explanation, batch: list[_Encoded]) -> list[dict]:
        logits = part.output
        probabilities = torch.softmax(logits.double(), -1).cpu()
        predicted = probabilities.argmax(-1)
        labels = self.labels or [str(i) for i in range(logits.shape[-1])]
        names = [None] * len(batch) if part.target is None else [labels[int(i)] for i in part.target]
        return [
            {
                "prediction": labels[int(predicted[i])],
                "target": names[i],
                "probabilities": {labels[j]: float(p) for j, p in enumerate(probabilities[i])},
            }
            for i in range(len(batch))
        ]

    def _next_token_info(self, part: Explanation, batch: list[_Encoded]) -> list[dict]:
        probabilities = torch.softmax(part.output.double(), -1).cpu()
        predicted = probabilities.argmax(-1)
        tokens = self.tokenizer.convert_ids_to_tokens
        info = []
        for i in range(len(batch)):
            top = probabilities[i].topk(5)
            info.append(
                {
                    "prediction": tokens(int(predicted[i])),
                    "target": None if part.target is None else tokens(int(part.target[i])),  # None: a callable
                    "probabilities": {tokens(int(t)): float(p) for p, t in zip(top.values, top.indices)},
                }
            )
        return info

    def _continuation_info(self, n_prompt: int) -> Callable[[Explanation, list[_Encoded]], list[dict]]:
        def info(part: Explanation, batch: list[_Encoded]) -> list[dict]:
            text = self.tokenizer.decode(batch[0].ids[n_prompt:])
            return [
                {"prediction": text, "target": text, "probabilities": {text: float(part.explained[0].double().exp())}}
            ]

        return info


def _last_position(raw: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The logits at each prompt's last token (right padding): ``(N, vocabulary)``."""
    logits = raw.logits if hasattr(raw, "logits") else raw[0]
    last = batch["attention_mask"].sum(1) - 1
    return logits[torch.arange(logits.shape[0], device=logits.device), last]


def _continuation_log_probability(n_prompt: int) -> Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]:
    """``(1, 1)``: the summed log-probability of the tokens after the first ``n_prompt``."""

    def output(raw: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = raw.logits if hasattr(raw, "logits") else raw[0]
        ids = batch["input_ids"]
        log_probs = torch.log_softmax(logits[0, n_prompt - 1 : ids.shape[1] - 1], -1)
        chosen = ids[0, n_prompt:].to(logits.device)
        return log_probs.gather(1, chosen[:, None]).sum().reshape(1, 1)

    return output


def _as_list(text_or_texts: str | Sequence[str]) -> tuple[list[str], bool]:
    if isinstance(text_or_texts, str):
        return [text_or_texts], True
    texts = list(text_or_texts)
    if not texts:
        raise ValueError("no texts given")
    return texts, False
