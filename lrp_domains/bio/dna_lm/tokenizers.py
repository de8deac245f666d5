"""DNA tokenizers built offline, as ``transformers.PreTrainedTokenizerFast``.

Two families of DNA language models tokenize DNA differently:

- :func:`kmer_tokenizer`: Nucleotide Transformer style (Dalla-Torre et al. 2024, *Nature Methods*
  22, 287-297): non-overlapping k-mers read left to right; bases that do not fill a k-mer (the
  tail of the sequence, stretches between ``N``\\ s) and ``N`` itself are single-base tokens; one
  CLS token first, no end token. Vocabulary: specials, all ``4**k`` k-mers, the single bases.
- :func:`bpe_tokenizer`: DNABERT-2 style (Zhou et al. 2024, ICLR): byte-pair encoding learned on
  given sequences, ``[CLS] ... [SEP]`` around each sequence.

:func:`fast_kmer_tokenizer` converts a slow k-mer tokenizer (Nucleotide Transformer ships
``EsmTokenizer`` with a ``vocab.txt``, no ``tokenizer.json``) into the first kind, with its own ids.

All return character offsets (``return_offsets_mapping=True``), so every token maps to the bases
it covers; special tokens get the empty span ``(0, 0)``. Inputs are expected in upper case
(``ACGTN``); :class:`~lrp_domains.bio.dna_lm.explainer.TokenSequenceExplainer` upper-cases and checks
sequences before tokenizing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from lrp_domains.errors import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BASES = "ACGT"
#: Single-base tokens of both tokenizers (N is an unknown base, kept as a token of its own).
SINGLE_BASES = "ACGTN"
#: Special tokens of the k-mer tokenizer, in id order (Nucleotide Transformer's names).
KMER_SPECIALS = ("<unk>", "<pad>", "<mask>", "<cls>")
#: Special tokens of the BPE tokenizer, in id order (DNABERT-2's names).
BPE_SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")


def kmer_tokenizer(k: int = 6, model_max_length: int = 1000) -> PreTrainedTokenizerFast:
    """A Nucleotide-Transformer-style tokenizer: non-overlapping ``k``-mers, leftover bases and
    ``N`` as single-base tokens, ``<cls>`` first.

    Ids: ``<unk>`` 0, ``<pad>`` 1, ``<mask>`` 2, ``<cls>`` 3, then the ``4**k`` k-mers in
    lexicographic ``ACGT`` order, then ``A C G T N``. Any other character becomes ``<unk>``.
    ``model_max_length`` is the longest input in tokens (CLS included).
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if not isinstance(k, int) or k < 1 or k > 8:
        raise ValueError(f"k must be an integer from 1 to 8 (the vocabulary has 4**k k-mers), got {k!r}")
    kmers = ["".join(p) for p in itertools.product(BASES, repeat=k)]
    words = list(KMER_SPECIALS) + kmers + [b for b in SINGLE_BASES if b not in kmers]
    vocab = {word: index for index, word in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Leftmost match: a full k-mer of ACGT where one starts, otherwise one character.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(f"[ACGT]{{{k}}}|."), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<cls> $A", pair="<cls> $A $B", special_tokens=[("<cls>", vocab["<cls>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        cls_token="<cls>",
        model_max_length=model_max_length,
    )
    fast.init_kwargs["kmer"] = k
    return fast


#: Sequences on which a converted tokenizer must give the slow one's ids: k-mers, tails shorter
#: than k, N alone and between k-mers, every base at every phase.
CHECK_SEQUENCES = (
    "A",
    "N",
    "ACGTN",
    "NNN",
    "ACGTACGTACGTACGTACGTA",
    "NACGTACGTTN",
    "GATTACANGATTACAGATTACA",
    "TTTTTTTTTTTTTN",
    "CCCCCGGGGGAAAAATTTTTNC",
    "ACGNTACGTNNACGTACGTACNGT",
)


def fast_kmer_tokenizer(slow: Any, check: Sequence[str] = CHECK_SEQUENCES) -> PreTrainedTokenizerFast:
    """A fast tokenizer (character offsets) built from a slow k-mer DNA tokenizer's vocabulary,
    giving the same ids: e.g. Nucleotide Transformer's ``EsmTokenizer`` (``vocab.txt`` with the
    specials, all ``4**k`` k-mers and the single bases), which splits a sequence into
    non-overlapping k-mers left to right and every other character into one token, with the slow
    tokenizer's special tokens around it (``<cls>`` first; ``<eos>`` last where it has one).

    Checked: the vocabulary must hold all ``4**k`` k-mers of one ``k`` (an InputError says why
    not), and the fast tokenizer must give the slow one's ids on ``check`` (upper-case DNA with
    ``N``)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    name = type(slow).__name__
    vocab = dict(slow.get_vocab())
    kmers = [word for word in vocab if len(word) > 1 and not set(word) - set(BASES)]
    sizes = sorted({len(word) for word in kmers})
    if len(sizes) != 1 or len(kmers) != 4 ** sizes[0]:
        found = ", ".join(f"{sum(len(w) == n for w in kmers)} of length {n}" for n in sizes) or "none"
        raise InputError(
            f"{name} cannot be converted to a fast tokenizer: its vocabulary is not a k-mer DNA "
            f"vocabulary (all 4**k k-mers of one k and single bases; words of A, C, G, T found: {found})"
        )
    k = sizes[0]
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=slow.unk_token))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(f"[ACGT]{{{k}}}|."), behavior="isolated")
    # The slow tokenizer's own special tokens around a sequence (and a pair, where it takes one).
    names = {index: word for word, index in vocab.items()}

    def template(*parts: list[int]) -> str | None:
        try:
            ids = slow.build_inputs_with_special_tokens(*parts)
        except ValueError:
            return None
        marks = {-1: "$A", -2: "$B:1"}
        return " ".join(marks.get(i) or names[i] for i in ids)

    used = {i for i in slow.build_inputs_with_special_tokens([-1]) if i >= 0}
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template([-1]), pair=template([-1], [-2]), special_tokens=[(names[i], i) for i in sorted(used)]
    )
    specials = {
        key: getattr(slow, key)
        for key in ("unk_token", "pad_token", "mask_token", "cls_token", "eos_token", "bos_token", "sep_token")
        if getattr(slow, key, None) is not None
    }
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=slow.model_max_length, padding_side=slow.padding_side, **specials
    )
    fast.init_kwargs["kmer"] = k
    for sequence in check:
        if fast(sequence)["input_ids"] != slow(sequence)["input_ids"]:
            raise InputError(
                f"{name} cannot be converted to a fast tokenizer: built from its vocabulary ({k}-mers), "
                f"it tokenizes {sequence!r} otherwise than the slow one; save the model's fast tokenizer "
                "(tokenizer.json) with it"
            )
    return fast


def bpe_tokenizer(
    sequences: Iterable[str], vocab_size: int = 256, max_token_length: int = 12, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """A DNABERT-2-style BPE tokenizer learned on ``sequences`` (upper-case DNA).

    Specials ``[UNK] [CLS] [SEP] [PAD] [MASK]`` (ids 0-4), then ``A C G T N`` and the merges, up to
    ``vocab_size`` tokens, no token longer than ``max_token_length`` bases. Each sequence is one
    word (no pre-tokenization), encoded as ``[CLS] tokens [SEP]``.
    """
    from tokenizers import Tokenizer, models, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [str(s).upper() for s in sequences]
    if not texts or not any(texts):
        raise ValueError("bpe_tokenizer needs at least one non-empty sequence to learn merges from")
    if vocab_size <= len(BPE_SPECIALS) + len(SINGLE_BASES):
        raise ValueError(
            f"vocab_size must exceed {len(BPE_SPECIALS) + len(SINGLE_BASES)} (specials and bases), got {vocab_size}"
        )
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BPE_SPECIALS),
        initial_alphabet=list(SINGLE_BASES),
        limit_alphabet=len(SINGLE_BASES),
        max_token_length=max_token_length,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=model_max_length,
    )
