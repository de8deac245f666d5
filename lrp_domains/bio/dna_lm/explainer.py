"""Nucleotide relevance for DNA language models (k-mer or BPE tokens), through the text machinery.

:class:`TokenSequenceExplainer` explains a transformers DNA language model (Nucleotide Transformer
is ``Esm*``; DNABERT-2-style models are BERTs over BPE tokens) with AttnLRP or CP-LRP: the
tokenizing, batching and reading of relevance at the embeddings are
:class:`~lrp_domains.text.TextExplainer`'s (found through the explainer registry, kind ``"text"``:
``bio`` does not import ``text``); this module maps tokens to bases and returns the same
:class:`~lrp_domains.bio.sequences.explainer.SequenceExplanation` as the one-hot CNN path, so
seqlets, JASPAR matching, logos and the tfmodisco-lite export work unchanged.

Token to bases. A token's relevance is its word embedding's relevance summed over the hidden size
(as for text). It is split equally over the bases the token covers (its character offsets) and
placed on each observed base's channel: the relevance of a token's bases sums to the token's
relevance. Special tokens (``<cls>``, ``[CLS]``, ``[SEP]``) cover no base; their relevance is kept
in :attr:`TokenSequenceExplanation.special_relevance`, and what reached other embeddings (learned
positions, token types) in ``other_relevance``. An ``N`` covers no channel: its share is spread
evenly over the four channels of ``channel_relevance`` (``relevance`` has nothing there, as on the
CNN path). So, per sequence, ``channel_relevance.sum() + special_relevance + other_relevance +
delta == explained``, where ``delta`` is what biases absorbed (unlike the CNN path, ``delta`` is
not ``explained`` minus the bases' relevance alone: the special tokens' share is kept apart).

Hypothetical contributions (first order). Relevance at an embedding is ``e . g`` with ``g`` the
LRP-modified gradient at the token's input embedding ``e``. For base ``b`` at position ``p`` of
token ``t``, the hypothetical contribution is ``g_t . E[t with p set to b] / len(t)``: the relevance
the substituted token would receive with the rest of the backward pass unchanged, split over its
bases like an observed token (a first-order in-silico mutagenesis from the same backward pass). At
the observed base the substituted token is ``t`` itself, so the hypothetical map equals the
observed relevance there. A k-mer vocabulary holds every substitution. A BPE vocabulary need not:
where the substituted string is not a token, the entry is 0 (no first-order estimate exists
without re-tokenizing, which changes the token boundaries), and
:attr:`TokenSequenceExplanation.hypothetical_coverage` gives the share of alternative entries that
had a token. ``g`` is read as relevance divided by embedding, entry by entry (relevance is
``e * g`` elementwise); an embedding entry that is exactly 0 gives no gradient there (treated as 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

import numpy as np
import torch
from torch import nn

from lrp_domains.bio.sequences.explainer import SequenceExplanation, _looks_like_path
from lrp_domains.bio.sequences.onehot import DNA, one_hot
from lrp_domains.core.composite import Composite
from lrp_domains.core.engine.ledger import LedgerRows
from lrp_domains.domains import DomainExplainer, Reader
from lrp_domains.errors import InputError
from lrp_domains.files.fasta import FastaRecords, check_unique, read_fasta

__all__ = ["TokenSequenceExplainer", "TokenSequenceExplanation", "bases_from_tokens"]

#: Letters a DNA sequence may hold (N: unknown base).
LETTERS = DNA + "N"
TokenTarget = Union[None, int, str, Sequence[Union[int, str]], Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class TokenSequenceExplanation(SequenceExplanation):
    """A :class:`SequenceExplanation` of a token model, with its token-level bookkeeping.

    ``output``: the class probabilities ``(N, classes)``. ``tokens``, ``token_spans`` (character
    offsets), ``special`` and ``token_relevance`` (word-embedding relevance per token, special
    tokens included) per sequence; ``special_relevance`` ``(N,)``: the special tokens' summed
    relevance; ``other_relevance`` ``(N,)``: relevance of the other embeddings (learned positions,
    token types); ``hypothetical_coverage`` ``(N,)``: the share of alternative-base entries whose
    substituted token is in the vocabulary (1 for k-mer tokenizers). See the module docstring.
    """

    tokens: list[list[str]] = field(default_factory=list)
    token_spans: list[list[tuple[int, int]]] = field(default_factory=list)
    special: list[list[bool]] = field(default_factory=list)
    token_relevance: list[torch.Tensor] = field(default_factory=list)
    special_relevance: torch.Tensor | None = None
    other_relevance: torch.Tensor | None = None
    hypothetical_coverage: torch.Tensor | None = None
    predictions: list[str] = field(default_factory=list)


def bases_from_tokens(
    sequence: str,
    spans: Sequence[tuple[int, int]],
    special: Sequence[bool],
    token_relevance: np.ndarray,
    alphabet: str = DNA,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Split each token's relevance equally over the bases it covers: ``(relevance (A, L) on the
    observed bases, channel_relevance (A, L) with N's share spread over the alphabet, the special
    tokens' summed relevance)``. Tokens that cover no base count as special."""
    length = len(sequence)
    observed = np.zeros((len(alphabet), length))
    channels = np.zeros((len(alphabet), length))
    specials = 0.0
    index = {letter: i for i, letter in enumerate(alphabet)}
    for (start, end), is_special, value in zip(spans, special, token_relevance):
        if is_special or end <= start:
            specials += float(value)
            continue
        share = float(value) / (end - start)
        for p in range(start, end):
            row = index.get(sequence[p])
            if row is None:
                channels[:, p] += share / len(alphabet)
            else:
                observed[row, p] += share
                channels[row, p] += share
    return observed, channels, specials


class TokenSequenceExplainer(DomainExplainer):
    """Explain a DNA language model base by base (see the module docstring for the mapping).

    Parameters
    ----------
    model:
        A transformers sequence classifier over DNA tokens (``EsmForSequenceClassification``,
        ``BertForSequenceClassification``...); explained in eval mode and returned unchanged.
    tokenizer:
        Its fast tokenizer (character offsets), e.g. :func:`~lrp_domains.bio.dna_lm.tokenizers.kmer_tokenizer`.
        A slow k-mer tokenizer (Nucleotide Transformer's ``EsmTokenizer``) is converted, with a
        warning, into a fast one giving the same ids
        (:func:`~lrp_domains.bio.dna_lm.tokenizers.fast_kmer_tokenizer`; the given one is not changed).
    composite:
        ``"attnlrp"`` (default), ``"cp-lrp"`` or a :class:`~lrp_domains.Composite`.
    labels:
        Class names (default: the config's ``id2label``).
    strict:
        Raise when the model runs an operation no rule covers (default: warn).
    """

    kind: ClassVar[str] = "dna-lm"
    item: ClassVar[str] = "record"
    default_composite: ClassVar[str] = "attnlrp"
    run_options: ClassVar[dict[str, Any]] = {"target": None, "batch_size": 16, "ledger": False}
    columns: ClassVar[tuple[str, ...]] = (
        "explained",
        "delta",
        "sequence",
        "relevance",
        "hypothetical",
        "tokens",
        "token_relevance",
        "special_relevance",
        "other_relevance",
        "ledger",
    )
    report: ClassVar[str] = "lrp_domains.report.sequences:write_sequence_report"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        composite: str | Composite = "attnlrp",
        labels: Sequence[str] | None = None,
        strict: bool = False,
    ) -> None:
        from lrp_domains import domains

        TextExplainer = domains.get("text")  # noqa: N806  (through the registry: bio does not import text)
        tokenizer = _fast(tokenizer)
        _check_pair(model, tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self._text = TextExplainer(model, tokenizer, composite=composite, labels=labels, strict=strict)
        self._text.keep_embedding_vectors = True
        self.composite = self._text.composite
        self.labels = self._text.labels
        self.alphabet = DNA
        self._vocab = tokenizer.get_vocab()

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, composite: str | Composite = "attnlrp", **kwargs: Any
    ) -> TokenSequenceExplainer:
        """A classifier and its tokenizer saved with ``save_pretrained`` (a local folder works offline).
        ``labels`` and ``strict`` go to the explainer, other keywords to transformers' ``from_pretrained``."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from lrp_domains.models import pretrained_errors, pretrained_tokenizer

        options = {key: kwargs.pop(key) for key in ("labels", "strict") if key in kwargs}
        with pretrained_errors(str(folder)):
            model = AutoModelForSequenceClassification.from_pretrained(str(folder), **kwargs).eval()
            tokenizer = pretrained_tokenizer(str(folder), AutoTokenizer)
        return cls(model, tokenizer, composite=composite, **options)

    @classmethod
    def from_options(
        cls, model: str | None = None, weights: str | None = None, composite: str | None = None
    ) -> TokenSequenceExplainer:
        """A model folder (``--model``, written by ``save_pretrained``: config, safetensors weights, tokenizer)."""
        from lrp_domains.models import as_model_option, refuse_weights

        refuse_weights(weights, "a DNA language model folder")
        if model is None:
            raise InputError(
                "the dna-lm explainer has no default model: give --model FOLDER, a transformers "
                "classifier and its tokenizer saved with save_pretrained "
                "(workflows/bio/language_model_motifs.py writes one)"
            )
        if not Path(model).is_dir():
            raise InputError(f"--model {model}: not a folder; give a folder written by save_pretrained")
        with as_model_option(model):
            return cls.from_pretrained(model, composite=composite or cls.default_composite)

    # -- explaining -------------------------------------------------------------------------
    def explain(
        self,
        sequences: str | Path | Sequence[str],
        target: TokenTarget = None,
        batch_size: int = 16,
        hypothetical: bool = True,
        progress: bool = False,
        ids: Sequence[str] | None = None,
        unique_ids: bool = True,
        ledger: bool = False,
    ) -> TokenSequenceExplanation:
        """Relevance of every base for one output per sequence: a string, strings, or a FASTA path.

        ``target``: None (the predicted class), a class index or label name, one per sequence, or a
        callable on the logits. ``hypothetical``: also the first-order hypothetical contributions
        (free: the same backward pass; False leaves them zero). Records of different lengths are
        batched together (padding is masked) and their arrays zero-padded to the longest.
        """
        names, texts, messages = self._inputs(sequences, ids, unique_ids)
        results = self._text.explain(
            texts, target=target, batch_size=batch_size, progress=progress, ids=messages, ledger=ledger
        )
        decoded = self._decode(names, texts, results, hypothetical)
        ledgers = [r.ledger_rows for r in results]
        if ledger and all(rows is not None for rows in ledgers):
            decoded.ledger_rows = LedgerRows.concatenate([rows for rows in ledgers if rows is not None])
        return decoded

    def _inputs(
        self,
        data: str | Path | Sequence[str],
        ids: Sequence[str] | None,
        unique: bool,
        messages: Sequence[str] | None = None,
    ) -> tuple[list[str], list[str], list[str]]:
        if isinstance(data, Path) or (isinstance(data, str) and _looks_like_path(data)):
            names, sequences = read_fasta(data, unique=False)
        else:
            sequences = [data] if isinstance(data, str) else list(data)
            names = list(ids) if ids is not None else [f"seq{i}" for i in range(len(sequences))]
        if not sequences:
            raise InputError("no sequences given")
        if len(names) != len(sequences):
            raise InputError(f"got {len(names)} ids for {len(sequences)} sequences")
        if unique:
            from_file = isinstance(data, Path) or (isinstance(data, str) and _looks_like_path(data))
            check_unique(names, Path(data).name if from_file else "the sequences")
        messages = list(messages) if messages is not None else [repr(n) for n in names]
        limit = self._text.max_length
        texts = []
        for message, sequence in zip(messages, sequences):
            if not isinstance(sequence, str):
                raise InputError(f"{message} is a {type(sequence).__name__}, not a DNA string")
            text = sequence.upper()
            if not text:
                raise InputError(f"{message}: an empty sequence; remove it (there is nothing to explain)")
            bad = next((i for i, c in enumerate(text) if c not in LETTERS), None)
            if bad is not None:
                raise InputError(
                    f"{message}: symbol {sequence[bad]!r} at position {bad + 1} is not one of {LETTERS}; "
                    "DNA language models take A, C, G, T and N (replace other IUPAC codes by N)"
                )
            if limit is not None:
                count = len(self.tokenizer(text)["input_ids"])
                if count > limit:
                    raise InputError(
                        f"{message}: {len(text)} bases make {count} tokens, but the model takes at most "
                        f"{limit}; split the sequence into shorter windows"
                    )
            texts.append(text)
        return names, texts, messages

    def _decode(
        self, names: list[str], texts: list[str], results: list, hypothetical: bool
    ) -> TokenSequenceExplanation:
        width = max(len(t) for t in texts)
        n = len(texts)
        relevance = torch.zeros(n, 4, width, dtype=torch.float64)
        channels = torch.zeros_like(relevance)
        units = torch.zeros_like(relevance)
        onehot = torch.zeros(n, 4, width)
        special = torch.zeros(n, dtype=torch.float64)
        other = torch.zeros(n, dtype=torch.float64)
        coverage = torch.ones(n, dtype=torch.float64)
        weight = self.model.get_input_embeddings().weight.detach().double().cpu()
        for row, (text, result) in enumerate(zip(texts, results)):
            length = len(text)
            values = result.token_relevance.double().numpy()
            observed, spread, specials = bases_from_tokens(text, result.token_spans, result.special, values)
            relevance[row, :, :length] = torch.from_numpy(observed)
            channels[row, :, :length] = torch.from_numpy(spread)
            special[row] = specials
            other[row] = sum(float(v.sum()) for v in result.embedding_relevance.values())
            onehot[row, :, :length] = one_hot(text, DNA, ids=[names[row]])[0]
            if hypothetical:
                vectors = result.extra["word_embedding_relevance"].double()
                units[row, :, :length], coverage[row] = self._hypothetical(text, result, vectors, weight)
        probabilities = torch.tensor(
            [[r.probabilities[k] for k in r.probabilities] for r in results], dtype=torch.float64
        )
        explained = torch.tensor([r.explained for r in results], dtype=torch.float64)
        delta = torch.tensor([r.delta for r in results], dtype=torch.float64)
        return TokenSequenceExplanation(
            ids=list(names),
            sequences=list(texts),
            onehot=onehot,
            output=probabilities,
            relevance=relevance,
            hypothetical=units,
            explained=explained,
            delta=delta,
            lengths=[len(t) for t in texts],
            alphabet=DNA,
            composite=self.composite.name,
            channel_relevance=channels,
            tokens=[r.tokens for r in results],
            token_spans=[list(r.token_spans) for r in results],
            special=[list(r.special) for r in results],
            token_relevance=[r.token_relevance for r in results],
            special_relevance=special,
            other_relevance=other,
            hypothetical_coverage=coverage,
            predictions=[r.prediction for r in results],
        )

    def _hypothetical(
        self, text: str, result: Any, vectors: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        """``(4, len(text))`` first-order hypothetical contributions and the share of alternative
        entries whose substituted token exists (see the module docstring)."""
        embedded = weight[torch.tensor(result.token_ids)]
        gradient = torch.where(embedded != 0, vectors / torch.where(embedded != 0, embedded, 1.0), 0.0)
        rows, columns, tokens, substitutes, sizes = [], [], [], [], []
        alternatives = found = 0
        for t, ((start, end), is_special) in enumerate(zip(result.token_spans, result.special)):
            if is_special or end <= start:
                continue
            piece = result.tokens[t]
            if len(piece) != end - start:  # a token string that is not its bases (a prefix or a marker)
                piece = text[start:end]
            for p in range(start, end):
                for b, letter in enumerate(DNA):
                    changed = piece[: p - start] + letter + piece[p - start + 1 :]
                    token = result.token_ids[t] if changed == piece else self._vocab.get(changed)
                    if changed != piece:
                        alternatives += 1
                        found += token is not None
                    if token is None:
                        continue
                    rows.append(b)
                    columns.append(p)
                    tokens.append(t)
                    substitutes.append(token)
                    sizes.append(end - start)
        out = torch.zeros(4, len(text), dtype=torch.float64)
        if rows:
            values = (gradient[torch.tensor(tokens)] * weight[torch.tensor(substitutes)]).sum(-1)
            out[torch.tensor(rows), torch.tensor(columns)] = values / torch.tensor(sizes, dtype=torch.float64)
        return out, (found / alternatives if alternatives else 1.0)

    # -- the contract (runs) ----------------------------------------------------------------
    def reader(self, path: Any, column: str = "text") -> Reader:
        """FASTA records (plain or gzipped), as the one-hot sequence explainer reads them; or
        windows around genome regions (a :class:`~lrp_domains.bio.sequences.regions.GenomeRegions` from
        :meth:`regions_source`), by default as many bases as a k-mer tokenizer fits into the
        model's tokens (the explainer's or model's ``window`` attribute when set)."""
        from lrp_domains.bio.sequences.regions import GenomeRegions, RegionWindows, token_window

        if isinstance(path, GenomeRegions):
            given = [getattr(owner, "window", None) for owner in (self, self.model)]
            width = next((w for w in given if isinstance(w, int) and w > 0), None)
            return RegionWindows(path, width or token_window(self.tokenizer, self._text.max_length))
        return FastaRecords(path, what="a DNA language model run")

    @classmethod
    def regions_source(cls, regions: str | Path, genome: str | Path | None, width: int | None = None) -> Any:
        """Windows of ``width`` bases around the regions of a BED or narrowPeak file, read from
        ``genome`` (:mod:`lrp_domains.bio.sequences.regions`; default width: see :meth:`reader`)."""
        from lrp_domains.bio.sequences.regions import genome_regions

        return genome_regions(regions, genome, width)

    def explain_batch(
        self,
        ids: Sequence[str],
        items: Sequence[str],
        first_row: int = 0,
        target: TokenTarget = None,
        batch_size: int = 16,
        ledger: bool = False,
    ) -> TokenSequenceExplanation:
        """Explain one shard's records (runs key rows by row number: repeated ids are allowed);
        messages name a record by row and id."""
        messages = [f"row {first_row + i} (id {name!r})" for i, name in enumerate(ids)]
        names, texts, messages = self._inputs(list(items), list(ids), False, messages)
        results = self._text.explain(texts, target=target, batch_size=batch_size, ids=messages, ledger=ledger)
        decoded = self._decode(names, texts, results, True)
        ledgers = [r.ledger_rows for r in results]
        if ledger and all(rows is not None for rows in ledgers):
            decoded.ledger_rows = LedgerRows.concatenate([rows for rows in ledgers if rows is not None])
        return decoded

    def result_rows(self, result: TokenSequenceExplanation, ids: Sequence[str]) -> dict[str, list]:
        """Per record: the sequence, relevance per position, the hypothetical map (4 x L,
        letter-major), the tokens with their relevance, the special tokens' and other embeddings'
        relevance."""
        from lrp_domains.bio.sequences.explainer import ledger_column, sequence_rows

        return {
            **sequence_rows(result),
            "tokens": result.tokens,
            "token_relevance": [r.double().tolist() for r in result.token_relevance],
            "special_relevance": result.special_relevance.tolist(),
            "other_relevance": result.other_relevance.tolist(),
            "ledger": ledger_column(result.ledger_rows, len(result.ids)),
        }

    @classmethod
    def result_from_rows(cls, rows: Any, settings: dict[str, Any]) -> Any:
        """The base-level explanation of a run's rows, for the sequence report (the rows hold the
        same per-base relevance and hypothetical map as a CNN's: :func:`explanation_from_rows`)."""
        from lrp_domains.bio.sequences.explainer import explanation_from_rows

        return explanation_from_rows(rows, str(settings.get("alphabet", "ACGT")), str(settings.get("composite", "")))

    def settings(self) -> dict[str, Any]:
        """The alphabet (rows of the hypothetical map), the labels and the tokenizer's vocabulary size."""
        return {"alphabet": self.alphabet, "labels": self.labels, "vocabulary": len(self.tokenizer)}


def _fast(tokenizer: Any) -> Any:
    """``tokenizer`` if it is fast; a slow k-mer tokenizer converted to a fast one with the same ids
    (one warning says so); else an InputError saying what to give."""
    if getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "get_vocab"):
        return tokenizer
    import warnings

    from lrp_domains.bio.dna_lm.tokenizers import fast_kmer_tokenizer

    try:
        fast = fast_kmer_tokenizer(tokenizer)
    except InputError as error:
        raise InputError(
            f"TokenSequenceExplainer needs a fast tokenizer (character offsets map tokens to bases): {error}"
        ) from None
    warnings.warn(
        f"the tokenizer ({type(tokenizer).__name__}) is a slow one, without character offsets: converted "
        f"to a fast tokenizer of its vocabulary ({fast.init_kwargs['kmer']}-mers and single bases), which "
        "gives the same ids on test sequences",
        UserWarning,
        stacklevel=3,
    )
    return fast


def _check_pair(model: nn.Module, tokenizer: Any) -> None:
    """InputErrors for a tokenizer that does not fit the model, or does not read DNA."""
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(
            "TokenSequenceExplainer needs a fast tokenizer (character offsets map tokens to bases): "
            "give a transformers PreTrainedTokenizerFast, or save one (tokenizer.json) in the model's "
            "folder with tokenizer.save_pretrained(folder)"
        )
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not isinstance(embeddings, nn.Embedding):
        raise InputError(
            f"{type(model).__name__} has no token embedding (get_input_embeddings); give a transformers "
            "DNA language model"
        )
    if len(tokenizer) > embeddings.num_embeddings:
        raise InputError(
            f"the tokenizer has {len(tokenizer)} tokens but the model embeds {embeddings.num_embeddings}: "
            "they do not belong together; give the model's own tokenizer"
        )
    pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    if pad is not None and tokenizer.pad_token_id is not None and pad != tokenizer.pad_token_id:
        raise InputError(
            f"the tokenizer pads with id {tokenizer.pad_token_id} but the model's pad_token_id is {pad}: "
            "they do not belong together; give the model's own tokenizer"
        )
    unknown = tokenizer.unk_token_id
    ids = tokenizer("ACGTACGTACGTN", add_special_tokens=False)["input_ids"]
    if unknown is not None and unknown in ids:
        raise InputError("the tokenizer maps DNA bases to its unknown token: it is not a DNA tokenizer")
