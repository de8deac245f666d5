"""``TextExplainer``: relevance of tokens and words for Hugging Face classifiers and decoders."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from lrp_domains.core.attribution import eval_mode, resolve_composite
from lrp_domains.core.composite import Composite
from lrp_domains.core.scope import Scope
from lrp_domains.text import composites as _text_composites  # noqa: F401  (registers attnlrp, cp-lrp)
from lrp_domains.text.result import TextExplanation
from lrp_domains.text.words import group_words

TextTarget = Union[None, int, str, Sequence[Union[int, str]], Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class _Encoded:
    """One tokenized text: ids, offsets into ``text``, special-token flags."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[bool]
    token_type_ids: list[int] | None = None


class TextExplainer:
    """Explain a transformers model's predictions on text with AttnLRP or CP-LRP.

    Parameters
    ----------
    model:
        A sequence classifier (``...ForSequenceClassification``) or a causal language model
        (``...ForCausalLM``, ``GPT2LMHeadModel``). It is explained in eval mode and returned
        unchanged.
    tokenizer:
        Its (fast) tokenizer: character offsets map tokens to words.
    composite:
        ``"attnlrp"`` (default), ``"cp-lrp"``, or a :class:`~lrp_domains.Composite`.
    labels:
        Class names for classifiers (default: the model config's ``id2label``).
    max_length:
        Longest input in tokens (default: what the tokenizer and the position embeddings allow);
        longer texts are truncated with a warning.
    strict:
        Raise when the model runs an operation no rule covers (default: warn).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, composite: str | Composite = "attnlrp",
                 labels: Sequence[str] | None = None, max_length: int | None = None, strict: bool = False) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.composite = resolve_composite(composite)
        self.strict = strict
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("TextExplainer needs a fast tokenizer (character offsets); load it with use_fast=True")
        name = type(model).__name__
        self.is_decoder = name.endswith(("ForCausalLM", "LMHeadModel"))
        config = getattr(model, "config", None)
        if labels is None and not self.is_decoder and config is not None:
            id2label = getattr(config, "id2label", None) or {}
            labels = [id2label.get(i, str(i)) for i in range(getattr(config, "num_labels", len(id2label)))]
        self.labels = list(labels) if labels is not None else None
        limits = [getattr(tokenizer, "model_max_length", None), getattr(config, "max_position_embeddings", None),
                  getattr(config, "n_positions", None), max_length]
        self.max_length = min(int(v) for v in limits if isinstance(v, int) and 0 < v < 10**7) if any(
            isinstance(v, int) and 0 < v < 10**7 for v in limits) else None
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        names = {id(m): n for n, m in model.named_modules()}
        self._word_source = names.get(id(embeddings)) if embeddings is not None else None
        forward = inspect.signature(model.forward).parameters
        self._accepts_token_types = "token_type_ids" in forward

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, composite: str | Composite = "attnlrp", **kwargs: Any) -> TextExplainer:
        """Load a classifier or causal LM and its tokenizer with transformers' ``from_pretrained``
        (a local folder works offline; a hub name needs the network)."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        config = AutoConfig.from_pretrained(name_or_path)
        causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in (config.architectures or []))
        loader = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
        model = loader.from_pretrained(name_or_path, **kwargs).eval()
        return cls(model, AutoTokenizer.from_pretrained(name_or_path), composite=composite)

    @classmethod
    def default(cls, composite: str | Composite = "attnlrp", device: str | torch.device | None = None) -> TextExplainer:
        """The default sentiment model: MiniLM fine-tuned on SST-2, built offline (see README)."""
        from lrp_domains.text.default_model import load_default_model

        model, tokenizer, labels = load_default_model(device=device)
        return cls(model, tokenizer, composite=composite, labels=labels)

    # -- public API --------------------------------------------------------------------------
    def explain(self, text_or_texts: str | Sequence[str], target: TextTarget = None, batch_size: int = 16,
                progress: bool = False) -> TextExplanation | list[TextExplanation]:
        """Relevance of each token and word for a class score (classifiers) or, for causal LMs,
        for the next-token logit (as :meth:`explain_next_token`).

        ``target``: None (the predicted class), a label name, a class index, one of those per
        text, or a callable ``logits -> (N,)`` (e.g. ``lambda out: out[:, 1] - out[:, 0]``).
        Batched results equal single ones: padding is masked out.
        """
        if self.is_decoder:
            return self.explain_next_token(text_or_texts, target=target, batch_size=batch_size, progress=progress)
        texts, single = _as_list(text_or_texts)
        encoded = [self._encode(text, i) for i, text in enumerate(texts)]
        targets = self._class_targets(target, len(texts))
        results = self._run(encoded, targets, batch_size, progress, self._classifier_output)
        return results[0] if single else results

    def explain_next_token(self, prompt: str | Sequence[str], target: int | str | None | Sequence = None,
                           batch_size: int = 16, progress: bool = False) -> TextExplanation | list[TextExplanation]:
        """Relevance of the prompt's tokens for the logit of the next token (causal LMs).

        ``target``: None (the most likely next token), a token string (one token of the
        vocabulary, e.g. ``" Paris"`` or ``"ĠParis"``) or a token id; or one per prompt.
        """
        self._require_decoder("explain_next_token")
        prompts, single = _as_list(prompt)
        encoded = [self._encode(text, i) for i, text in enumerate(prompts)]
        if target is None or isinstance(target, (int, str)):
            targets = [target] * len(prompts)
        else:
            targets = list(target)
            if len(targets) != len(prompts):
                raise ValueError(f"got {len(targets)} targets for {len(prompts)} prompts")
        targets = [None if t is None else self._token_id(t) for t in targets]
        results = self._run(encoded, targets, batch_size, progress, self._next_token_output)
        return results[0] if single else results

    def explain_continuation(self, prompt: str, continuation: str) -> TextExplanation:
        """Relevance of every token for the summed log-probability of ``continuation`` after
        ``prompt`` (teacher forcing); ``extra["continuation"]`` flags the continuation's tokens."""
        self._require_decoder("explain_continuation")
        head = self._encode(prompt, 0)
        tail = self.tokenizer(continuation, add_special_tokens=False, return_offsets_mapping=True)
        if not tail["input_ids"]:
            raise ValueError("the continuation is empty: give at least one token to score")
        shift = len(prompt)
        encoded = _Encoded(
            text=prompt + continuation, ids=head.ids + list(tail["input_ids"]),
            offsets=head.offsets + [(s + shift, e + shift) for s, e in tail["offset_mapping"]],
            special=head.special + [False] * len(tail["input_ids"]),
        )
        self._check_length(encoded, 0)
        n_prompt = len(head.ids)
        (result,) = self._run([encoded], [n_prompt], 1, False, self._continuation_output)
        result.extra["continuation"] = [i >= n_prompt for i in range(len(encoded.ids))]
        return result

    # -- encoding ----------------------------------------------------------------------------
    def _encode(self, text: str, index: int) -> _Encoded:
        if not isinstance(text, str):
            raise TypeError(f"text {index} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise ValueError(f"text {index} is empty; there is nothing to explain")
        enc = self.tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        encoded = _Encoded(text, list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]],
                           [bool(s) for s in enc["special_tokens_mask"]],
                           list(enc["token_type_ids"]) if "token_type_ids" in enc else None)
        if self.max_length is not None and len(encoded.ids) > self.max_length:
            dropped = len(encoded.ids) - self.max_length
            warnings.warn(
                f"text {index} has {len(encoded.ids)} tokens but the model takes {self.max_length}: truncated, "
                f"the last {dropped} tokens are not explained", stacklevel=3,
            )
            enc = self.tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True,
                                 truncation=True, max_length=self.max_length)
            encoded = _Encoded(text, list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]],
                               [bool(s) for s in enc["special_tokens_mask"]],
                               list(enc["token_type_ids"]) if "token_type_ids" in enc else None)
        return encoded

    def _check_length(self, encoded: _Encoded, index: int) -> None:
        if self.max_length is not None and len(encoded.ids) > self.max_length:
            raise ValueError(f"input {index} has {len(encoded.ids)} tokens; the model takes at most {self.max_length}")

    def _class_targets(self, target: TextTarget, n: int) -> list | Callable:
        if callable(target):
            return target
        if target is None or isinstance(target, (int, str)):
            targets = [target] * n
        else:
            targets = list(target)
            if len(targets) != n:
                raise ValueError(f"got {len(targets)} targets for {n} texts")
        return [None if t is None else self._label_index(t) for t in targets]

    def _label_index(self, label: int | str) -> int:
        labels = self.labels or []
        if isinstance(label, str):
            lowered = [str(name).lower() for name in labels]
            if label.lower() in lowered:
                return lowered.index(label.lower())
            raise ValueError(f"unknown label {label!r}; this model's labels are {labels}")
        if not 0 <= int(label) < len(labels):
            raise ValueError(f"class index {label} is out of range for {len(labels)} labels {labels}")
        return int(label)

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
            raise TypeError(f"{what} is for causal language models; {type(self.model).__name__} is a classifier: "
                            "use explain()")

    # -- the forward/backward ----------------------------------------------------------------
    def _run(self, encoded: list[_Encoded], targets: list | Callable, batch_size: int, progress: bool,
             output: Callable) -> list[TextExplanation]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        starts = range(0, len(encoded), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="explain", unit="batch")
        results: list[TextExplanation] = []
        device = next(self.model.parameters()).device
        with eval_mode(self.model), torch.enable_grad(), self.composite.context(self.model) as scope:
            for start in starts:
                batch = encoded[start:start + batch_size]
                batch_targets = targets if callable(targets) else targets[start:start + batch_size]
                results.extend(self._run_batch(scope, batch, batch_targets, output, device))
        return results

    def _run_batch(self, scope: Scope, batch: list[_Encoded], targets: list | Callable, output: Callable,
                   device: torch.device) -> list[TextExplanation]:
        lengths = [len(e.ids) for e in batch]
        width = max(lengths)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = np.full((len(batch), width), pad, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64)
        for row, e in enumerate(batch):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
            if e.token_type_ids is not None:
                types[row, :len(e.ids)] = e.token_type_ids
        ids = torch.from_numpy(ids)
        inputs = {"input_ids": ids.to(device), "attention_mask": torch.from_numpy(mask).to(device)}
        if self._accepts_token_types and batch[0].token_type_ids is not None:
            inputs["token_type_ids"] = torch.from_numpy(types).to(device)
        relevance, _, explained, info = self._in_scope(scope, inputs, lambda out: output(out, lengths, targets, ids))
        relevance = {k: v.detach().double().cpu().numpy() for k, v in relevance.items()}
        word_source = self._word_source if self._word_source in relevance else next(iter(relevance))
        explained = explained.detach().double().cpu().tolist()
        return [
            self._result(e, row, relevance, word_source, explained[row], info[row])
            for row, e in enumerate(batch)
        ]

    def _in_scope(self, scope: Scope, inputs: dict[str, torch.Tensor],
                  output: Callable) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, Any]:
        """One forward and backward inside ``scope``: relevance per embedding source ``(N, T)``."""
        scope.sources = {}
        scope.batch_size = inputs["input_ids"].shape[0]
        out = self.model(**inputs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        scope.check(self.strict)
        explained, info = output(logits)
        leaves = [(name, leaf) for name, tensors in scope.sources.items() for leaf in tensors]
        if not leaves:
            raise RuntimeError("no embedding module ran: TextExplainer reads relevance at nn.Embedding outputs")
        grads = torch.autograd.grad(explained.sum(), [leaf for _, leaf in leaves], allow_unused=True) \
            if explained.requires_grad else [None] * len(leaves)
        relevance: dict[str, torch.Tensor] = {}
        for (name, leaf), grad in zip(leaves, grads):
            value = torch.zeros(leaf.shape[:-1], dtype=leaf.dtype, device=leaf.device) if grad is None \
                else (leaf.detach() * grad).sum(-1)
            relevance[name] = relevance[name] + value if name in relevance else value
        return relevance, logits.detach(), explained, info

    def attribute(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  token_type_ids: torch.Tensor | None = None,
                  target: int | torch.Tensor | Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower-level entry for classifiers on token tensors ``(N, T)``: the word-embedding
        relevance ``(N, T)`` for the target class (None: the predicted one; an index; one per
        example; or a callable on the logits) and the logits. One forward and backward pass."""
        if self.is_decoder:
            raise TypeError("attribute is for classifiers; use explain_next_token for causal language models")
        device = next(self.model.parameters()).device
        inputs = {"input_ids": input_ids.to(device)}
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask.to(device)
        if token_type_ids is not None and self._accepts_token_types:
            inputs["token_type_ids"] = token_type_ids.to(device)

        def output(logits: torch.Tensor) -> tuple[torch.Tensor, None]:
            if callable(target):
                return target(logits), None
            if target is None:
                index = logits.detach().argmax(-1)
            else:
                index = torch.as_tensor(target, device=logits.device).long().expand(logits.shape[0])
            return logits.gather(1, index[:, None])[:, 0], None

        with eval_mode(self.model), torch.enable_grad(), self.composite.context(self.model) as scope:
            relevance, logits, _, _ = self._in_scope(scope, inputs, output)
        word = relevance[self._word_source] if self._word_source in relevance else next(iter(relevance.values()))
        return word.detach(), logits

    def _result(self, e: _Encoded, row: int, relevance: dict[str, np.ndarray], word_source: str,
                explained: float, info: dict) -> TextExplanation:
        n = len(e.ids)
        token_relevance = relevance[word_source][row, :n].copy()
        others = {name: torch.from_numpy(value[row, :n].copy()) for name, value in relevance.items()
                  if name != word_source}
        spans, owner = group_words(e.text, e.offsets, e.special)
        owners = np.asarray(owner)
        inside = owners >= 0
        word_relevance = np.bincount(owners[inside], weights=token_relevance[inside], minlength=len(spans))
        used = np.unique(owners[inside])
        remap = np.full(len(spans) + 1, -1)
        remap[used] = np.arange(len(used))
        total = float(token_relevance.sum()) + sum(float(v.sum()) for v in others.values())
        return TextExplanation(
            text=e.text, tokens=self.tokenizer.convert_ids_to_tokens(e.ids), token_ids=list(e.ids),
            token_spans=list(e.offsets), special=list(e.special), token_relevance=torch.from_numpy(token_relevance),
            words=[e.text[spans[w][0]:spans[w][1]] for w in used], word_spans=[spans[w] for w in used],
            word_relevance=torch.from_numpy(word_relevance[used]), token_word=remap[owners].tolist(),
            embedding_relevance=others, prediction=info["prediction"], probabilities=info["probabilities"],
            target=info["target"], explained=explained, delta=explained - total, composite=self.composite.name,
        )

    # -- what is explained -------------------------------------------------------------------
    def _classifier_output(self, logits: torch.Tensor, lengths: list[int], targets: list | Callable,
                           ids: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        probabilities = torch.softmax(logits.detach().double(), -1).cpu()
        predicted = probabilities.argmax(-1)
        labels = self.labels or [str(i) for i in range(logits.shape[-1])]
        if callable(targets):
            explained = targets(logits)
            if not isinstance(explained, torch.Tensor) or explained.shape != (logits.shape[0],):
                raise ValueError(f"a callable target must return one value per text, shape ({logits.shape[0]},)")
            names = [None] * logits.shape[0]
        else:
            index = torch.tensor([int(predicted[i]) if t is None else t for i, t in enumerate(targets)],
                                 device=logits.device)
            explained = logits.gather(1, index[:, None])[:, 0]
            names = [labels[int(i)] for i in index]
        info = [{"prediction": labels[int(predicted[i])], "target": names[i],
                 "probabilities": {labels[j]: float(p) for j, p in enumerate(probabilities[i])}}
                for i in range(logits.shape[0])]
        return explained, info

    def _next_token_output(self, logits: torch.Tensor, lengths: list[int], targets: list,
                           ids: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        rows = torch.arange(len(lengths), device=logits.device)
        last = logits[rows, torch.tensor(lengths, device=logits.device) - 1]
        probabilities = torch.softmax(last.detach().double(), -1).cpu()
        predicted = probabilities.argmax(-1)
        chosen = [int(predicted[i]) if t is None else t for i, t in enumerate(targets)]
        index = torch.tensor(chosen, device=logits.device)
        explained = last.gather(1, index[:, None])[:, 0]
        info = []
        for i in range(len(lengths)):
            top = probabilities[i].topk(5)
            info.append({
                "prediction": self.tokenizer.convert_ids_to_tokens(int(predicted[i])),
                "target": self.tokenizer.convert_ids_to_tokens(int(index[i])),
                "probabilities": {self.tokenizer.convert_ids_to_tokens(int(t)): float(p)
                                  for p, t in zip(top.values, top.indices)},
            })
        return explained, info

    def _continuation_output(self, logits: torch.Tensor, lengths: list[int], targets: list,
                             ids: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        n_prompt = targets[0]
        log_probs = torch.log_softmax(logits[0, n_prompt - 1:lengths[0] - 1], -1)
        chosen = ids[0, n_prompt:lengths[0]].to(logits.device)
        explained = log_probs.gather(1, chosen[:, None]).sum()[None]
        text = self.tokenizer.decode(ids[0, n_prompt:lengths[0]].tolist())
        return explained, [{"prediction": text, "target": text,
                            "probabilities": {text: float(explained.detach().exp())}}]


def _as_list(text_or_texts: str | Sequence[str]) -> tuple[list[str], bool]:
    if isinstance(text_or_texts, str):
        return [text_or_texts], True
    texts = list(text_or_texts)
    if not texts:
        raise ValueError("no texts given")
    return texts, False
