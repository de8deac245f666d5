"""Words from subword tokens by character offsets: WordPiece (##), byte-level BPE (Ġ), SentencePiece (▁)."""

import pytest
import text_models as T
import torch

from lrp_domains.text import TextExplainer
from lrp_domains.text.words import group_words, word_spans

TEXT = "Honestly, it's one of the best (really!) movies."
TOKENIZERS = {
    "wordpiece": T.wordpiece_tokenizer,
    "bytelevel": T.bytelevel_tokenizer,
    "sentencepiece": T.sentencepiece_tokenizer,
}
WORDS = ["Honestly", ",", "it's", "one", "of", "the", "best", "(", "really", "!", ")", "movies", "."]


def test_word_spans_split_punctuation_and_keep_inner_apostrophes():
    assert [TEXT[s:e] for s, e in word_spans(TEXT)] == WORDS


@pytest.mark.parametrize("style", ["wordpiece", "bytelevel", "sentencepiece"])
def test_tokens_land_in_the_right_words(style):
    tokenizer = TOKENIZERS[style]()
    enc = tokenizer(TEXT, return_offsets_mapping=True, return_special_tokens_mask=True)
    spans, owners = group_words(TEXT, enc["offset_mapping"], enc["special_tokens_mask"])
    # merged words are unions of consecutive base words
    assert "".join(TEXT[s:e].replace(" ", "") for s, e in spans) == "".join(WORDS)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    for token, owner, special, (start, end) in zip(tokens, owners, enc["special_tokens_mask"], enc["offset_mapping"]):
        if special:
            assert owner == -1
            continue
        word_start, word_end = spans[owner]
        piece = TEXT[start:end].strip()
        if piece:  # the token's characters lie inside its word
            at = TEXT.index(piece, start)
            assert word_start <= at and at + len(piece) <= word_end, token
        else:  # a lone space marker belongs to the next word
            assert word_start >= start, token
    assert sorted({o for o, s in zip(owners, enc["special_tokens_mask"]) if not s}) == list(range(len(spans)))


def test_a_token_spanning_two_words_merges_them():
    text = "Honestly, fine"
    spans, owners = group_words(text, [(0, 0), (0, 9), (9, 14)], [True, False, False])
    assert [text[s:e] for s, e in spans] == ["Honestly,", "fine"]
    assert owners == [-1, 0, 1]


@pytest.mark.parametrize(("style", "arch"), [("wordpiece", "bert"), ("bytelevel", "gpt2"), ("sentencepiece", "llama")])
def test_word_relevance_is_the_sum_of_its_tokens(style, arch):
    tokenizer = TOKENIZERS[style]()
    model = T.encoder(arch) if style == "wordpiece" else T.decoder(arch, vocab_size=len(tokenizer))
    result = TextExplainer(model, tokenizer, strict=True).explain(TEXT)
    assert [TEXT[s:e] for s, e in result.word_spans] == result.words
    if style != "sentencepiece":  # no token there crosses a word boundary
        assert result.words == WORDS
    for index in range(len(result.words)):
        members = [i for i, w in enumerate(result.token_word) if w == index]
        assert members
        assert result.word_relevance[index].item() == pytest.approx(result.token_relevance[members].sum().item())
    special = torch.tensor(result.special)
    assert all(w == -1 for w, s in zip(result.token_word, result.special) if s)
    total = result.word_relevance.sum() + result.token_relevance[special].sum()
    assert total.item() == pytest.approx(result.token_relevance.sum().item())
