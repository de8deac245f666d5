"""TextExplainer: targets, results, decoders, bad input."""

import html
import json
import math
import re

import pytest
import text_models as T
import torch

from lrp_domains.report import token_heatmap
from lrp_domains.text import TextExplainer, TextExplanation


@pytest.fixture(scope="module")
def classifier():
    model = T.encoder("bert", num_labels=2)
    return TextExplainer(model, T.wordpiece_tokenizer(), labels=["negative", "positive"], strict=True)


@pytest.fixture(scope="module")
def decoder():
    tokenizer = T.sentencepiece_tokenizer()
    return TextExplainer(T.decoder("llama", vocab_size=len(tokenizer)), tokenizer, strict=True)


def test_result_fields_and_bookkeeping(classifier):
    result = classifier.explain("A great, moving film!")
    assert isinstance(result, TextExplanation)
    assert result.tokens[0] == "[CLS]" and result.tokens[-1] == "[SEP]"
    assert result.special == [True] + [False] * (len(result.tokens) - 2) + [True]
    assert set(result.probabilities) == {"negative", "positive"}
    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    assert result.prediction == max(result.probabilities, key=result.probabilities.get)
    assert result.target == result.prediction
    assert set(result.embedding_relevance) == {
        "bert.embeddings.position_embeddings",
        "bert.embeddings.token_type_embeddings",
    }
    assert result.delta == pytest.approx(result.explained - result.total_relevance)
    assert result.special_relevance == pytest.approx(result.token_relevance[[0, -1]].sum().item())


def test_targets_by_name_index_list_and_callable(classifier):
    texts = ["A great film", "A dull film"]
    by_name = classifier.explain(texts, target="Positive")
    by_index = classifier.explain(texts, target=1)
    mixed = classifier.explain(texts, target=["positive", 0])
    negative = classifier.explain(texts, target="negative")
    contrast = classifier.explain(texts, target=lambda out: out[:, 1] - out[:, 0])
    for i in range(2):
        torch.testing.assert_close(by_name[i].token_relevance, by_index[i].token_relevance)
        assert by_name[i].target == "positive"
        torch.testing.assert_close(
            contrast[i].token_relevance, by_name[i].token_relevance - negative[i].token_relevance
        )
        assert contrast[i].target is None
    torch.testing.assert_close(mixed[1].token_relevance, negative[1].token_relevance)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target": "neutral"}, ValueError, "unknown label 'neutral'.*negative"),
        ({"target": 5}, ValueError, "out of range"),
        ({"target": ["positive"]}, ValueError, "got 1 for 2 examples"),
        ({"target": lambda out: out}, ValueError, "one value per example"),
    ],
)
def test_bad_targets(classifier, kwargs, error, match):
    with pytest.raises(error, match=match):
        classifier.explain(["a", "b"], **kwargs)


def test_bad_texts(classifier):
    with pytest.raises(ValueError, match="text 1 is empty"):
        classifier.explain(["fine", "   "])
    with pytest.raises(TypeError, match="text 0 is a int"):
        classifier.explain([3])
    with pytest.raises(ValueError, match="no texts"):
        classifier.explain([])


def test_long_text_is_truncated_with_a_warning():
    explainer = TextExplainer(T.encoder("bert"), T.wordpiece_tokenizer(), max_length=8)
    with pytest.warns(UserWarning, match=r"text 0 has 13 tokens but the model takes 8: truncated, the last 5"):
        result = explainer.explain("one two three four five six seven eight nine ten eleven")
    assert len(result.tokens) == 8 and result.tokens[-1] == "[SEP]"


def test_frames_dicts_and_html(classifier):
    result = classifier.explain('He said "<script>alert(1)</script>" & left.')
    tokens = result.to_frame()
    assert len(tokens) == len(result.tokens)
    assert {"token", "relevance", "special", "word", "relevance_position_embeddings"} <= set(tokens.columns)
    words = result.to_frame("word")
    assert list(words.word) == result.words
    json.dumps(result.to_dict())
    page = str(token_heatmap(result))
    assert "<script" not in page and "&lt;" in page
    assert page.count('title="') == len(result.words)
    body = page.split("</div>", 1)[1]  # after the prediction line: the text itself
    assert html.unescape(re.sub(r"<[^>]+>", "", body)) == result.text


def test_next_token_by_string_and_id(decoder):
    tokenizer = decoder.tokenizer
    by_string = decoder.explain_next_token("It rains in", target="▁Paris")
    token_id = tokenizer.convert_tokens_to_ids("▁Paris")
    by_id = decoder.explain_next_token("It rains in", target=token_id)
    torch.testing.assert_close(by_string.token_relevance, by_id.token_relevance)
    assert by_string.target == "▁Paris"
    with torch.no_grad():
        ids = torch.tensor([tokenizer("It rains in")["input_ids"]])
        logit = decoder.model(input_ids=ids).logits[0, -1, token_id].item()
    assert by_string.explained == pytest.approx(logit)
    assert decoder.explain("It rains in").prediction == by_string.prediction
    with pytest.raises(ValueError, match="not one"):
        decoder.explain_next_token("It rains in", target="Paris and Brest")


def test_continuation_log_probability(decoder):
    result = decoder.explain_continuation("It rains in", " Brest and Paris")
    tokenizer = decoder.tokenizer
    prompt = tokenizer("It rains in")["input_ids"]
    tail = tokenizer(" Brest and Paris", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        log_probs = torch.log_softmax(decoder.model(input_ids=torch.tensor([prompt + tail])).logits[0], -1)
    expected = sum(log_probs[len(prompt) - 1 + i, t].item() for i, t in enumerate(tail))
    assert result.explained == pytest.approx(expected)
    assert result.extra["continuation"] == [False] * len(prompt) + [True] * len(tail)
    assert result.text == "It rains in Brest and Paris"
    assert math.isfinite(result.delta)


def test_classifier_and_decoder_methods_do_not_mix(classifier):
    with pytest.raises(TypeError, match="causal language models"):
        classifier.explain_next_token("a")


def test_model_comes_back_unchanged(classifier):
    model = classifier.model
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    classifier.explain("A great film")
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    model.eval()
