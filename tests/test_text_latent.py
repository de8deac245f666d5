"""Relevance inside text transformers: per token and layer of the residual stream, per attention head.

Independent expectations: the models' own logits (what is explained); conservation along the
residual stream (CP-LRP on bias-free models: every block output is a cut of the graph, so each
layer's total is the explained logit); ``TextExplainer.explain``'s embedding relevance (the
embedding output is one LayerNorm, without bias, above the summed word, position and token-type
embeddings: per token, the same relevance); a hand-written forward pre-hook and tensor hook at each
attention output projection inside ``lrp_domains.explain`` (the relevance entering the projection);
a head whose output-projection columns are zeroed by hand carries nothing.
"""

from __future__ import annotations

import base64
import copy
import re

import numpy as np
import pytest
import text_models as T
import torch
from models import assert_unchanged, snapshot
from text_reference import tiny_bert, tiny_llama
from torch import nn

import lrp_domains as L
from lrp_domains.text import TextExplainer
from lrp_domains.text.latent import (
    attention_outputs,
    corpus_heads,
    head_relevance,
    layer_flow,
    residual_stream,
)

TEXTS = ["A great, moving film!", "I didn't like it at all.", "The plot is thin; the acting (mostly) fine."]
SHORT, LONG = "Nobody expected the ending", "Honestly, it's one of the best movies this year, and the cast shines."


@pytest.fixture(scope="module")
def bert():
    """A bias-free tiny BERT classifier (every Linear and LayerNorm bias is 0) with CP-LRP."""
    tokenizer = T.wordpiece_tokenizer()
    model = tiny_bert(seed=1, zero_biases=True, vocab_size=tokenizer.vocab_size)
    return TextExplainer(model, tokenizer, composite="cp-lrp", strict=True)


@pytest.fixture(scope="module")
def llama():
    """A tiny LLaMA (no biases by construction) with CP-LRP."""
    tokenizer = T.sentencepiece_tokenizer()
    return TextExplainer(tiny_llama(seed=0, vocab_size=len(tokenizer)), tokenizer, composite="cp-lrp", strict=True)


def _logits(explainer, text):
    enc = explainer.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = explainer.model(**enc).logits[0]
    return logits[-1] if explainer.is_decoder else logits


# -- (a) the residual stream conserves, and its bottom is the embeddings' relevance ------------------
def test_bert_layer_flow_conserves_and_starts_at_the_embedding_relevance(bert):
    flows = layer_flow(bert, TEXTS, batch_size=2)
    explanations = bert.explain(TEXTS, batch_size=2)
    assert len(flows) == len(TEXTS)
    for text, flow, e in zip(TEXTS, flows, explanations):
        assert flow.layers == ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1"]
        assert flow.tokens == bert.tokenizer.convert_ids_to_tokens(bert.tokenizer(text)["input_ids"])
        assert flow.relevance.shape == (3, len(flow.tokens))
        logits = _logits(bert, text)
        predicted = int(logits.argmax())
        assert flow.target == bert.labels[predicted] == e.target
        assert flow.explained == pytest.approx(float(logits[predicted]), abs=1e-10)
        # CP-LRP, no biases: every layer's total relevance is the explained logit
        np.testing.assert_allclose(flow.relevance.sum(1), flow.explained, rtol=0, atol=1e-6)
        assert np.abs(flow.delta).max() < 1e-6
        # the embedding output (LayerNorm over word + position + token type, no bias) holds, per
        # token, what the three embeddings receive
        embedded = e.token_relevance.numpy() + sum(v.numpy() for v in e.embedding_relevance.values())
        assert set(e.embedding_relevance) == {
            "bert.embeddings.position_embeddings",
            "bert.embeddings.token_type_embeddings",
        }
        np.testing.assert_allclose(flow.relevance[0], embedded, rtol=0, atol=1e-10)
        # relevance moves between tokens from layer to layer: the rows are not all the same
        assert np.abs(flow.relevance[2] - flow.relevance[0]).max() > 1e-3


@pytest.mark.parametrize("composite", ["cp-lrp", "attnlrp"])
def test_llama_layer_flow_conserves_and_starts_at_the_token_relevance(composite):
    tokenizer = T.sentencepiece_tokenizer()
    explainer = TextExplainer(tiny_llama(seed=0, vocab_size=len(tokenizer)), tokenizer, composite=composite)
    flows = layer_flow(explainer, TEXTS, batch_size=3)
    explanations = explainer.explain_next_token(TEXTS, batch_size=3)
    for text, flow, e in zip(TEXTS, flows, explanations):
        assert flow.layers == ["model.embed_tokens", "model.layers.0", "model.layers.1"]
        logits = _logits(explainer, text)
        assert flow.target == tokenizer.convert_ids_to_tokens(int(logits.argmax())) == e.target
        # LLaMA's RMSNorm and rotary tables run in float32 even in float64: batched (padded) and
        # alone, the logit agrees to float32's precision
        assert flow.explained == pytest.approx(float(logits.max()), rel=1e-6)
        # the embedding row is the word embedding's output: TextExplainer's token relevance
        assert e.embedding_relevance == {}
        np.testing.assert_allclose(flow.relevance[0], e.token_relevance.numpy(), rtol=0, atol=1e-10)
        if composite == "cp-lrp":  # AttnLRP's softmax rule does not conserve
            np.testing.assert_allclose(flow.relevance.sum(1), flow.explained, rtol=0, atol=1e-6)


def test_targets_by_name_index_and_callable(bert, llama):
    flows = layer_flow(bert, TEXTS[:2], target="LABEL_2")
    for text, flow in zip(TEXTS[:2], flows):
        assert flow.target == "LABEL_2"
        assert flow.explained == pytest.approx(float(_logits(bert, text)[2]), abs=1e-10)
        np.testing.assert_allclose(flow.relevance.sum(1), flow.explained, rtol=0, atol=1e-6)
    (contrast,) = layer_flow(bert, TEXTS[0], target=lambda out: out[:, 1] - out[:, 0])
    logits = _logits(bert, TEXTS[0])
    assert contrast.target is None
    assert contrast.explained == pytest.approx(float(logits[1] - logits[0]), abs=1e-10)
    np.testing.assert_allclose(contrast.relevance.sum(1), contrast.explained, rtol=0, atol=1e-6)
    (next_token,) = layer_flow(llama, TEXTS[0], target=7)
    assert next_token.target == llama.tokenizer.convert_ids_to_tokens(7)
    assert next_token.explained == pytest.approx(float(_logits(llama, TEXTS[0])[7]), abs=1e-10)


def test_to_frame_is_the_long_table(bert):
    (flow,) = layer_flow(bert, TEXTS[0])
    frame = flow.to_frame()
    assert list(frame.columns) == ["layer_index", "layer", "position", "token", "relevance"]
    assert len(frame) == flow.relevance.size
    row = frame[(frame.layer == "bert.encoder.layer.0") & (frame.position == 3)].iloc[0]
    assert row.token == flow.tokens[3] and row.relevance == flow.relevance[1, 3]


# -- (b) heads: the relevance entering each output projection, split by head -----------------------
def _entering(model, inputs, names, composite, output=None):
    """Relevance at the first input of each named module, written from scratch: a forward
    pre-hook keeps the input and a tensor hook its (modified) gradient, inside ``L.explain``."""
    modules = dict(model.named_modules())
    kept = {}

    def keep(name):
        def hook(module, args):
            x = args[0]
            kept[name] = [x]
            x.register_hook(lambda grad: kept[name].append(grad))

        return hook

    handles = [modules[name].register_forward_pre_hook(keep(name)) for name in names]
    try:
        result = L.explain(model, inputs, composite=composite, sources=nn.Embedding, output=output, check_delta=False)
    finally:
        for handle in handles:
            handle.remove()
    return {name: (x * grad).detach() for name, (x, grad) in kept.items()}, result.explained


def _explainer(arch):
    if arch in T.ENCODERS:
        return TextExplainer(T.encoder(arch), T.wordpiece_tokenizer(), strict=True)
    tokenizer = T.bytelevel_tokenizer() if arch == "gpt2" else T.sentencepiece_tokenizer()
    return TextExplainer(T.decoder(arch, vocab_size=len(tokenizer)), tokenizer, strict=True)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "llama", "gpt2"])
def test_heads_sum_to_the_relevance_entering_the_output_projection(arch):
    explainer = _explainer(arch)
    projections = attention_outputs(explainer.model)
    suffix = {
        "bert": "attention.output.dense",
        "distilbert": "attention.out_lin",
        "llama": "self_attn.o_proj",
        "gpt2": "attn.c_proj",
    }[arch]
    assert len(projections) == 2 and all(name.endswith(suffix) for name in projections)
    heads = head_relevance(explainer, TEXTS, batch_size=3)
    assert heads.relevance.shape == (3, 2, 4) and heads.layers == projections and heads.heads == 4
    output = (lambda raw, batch: raw.logits[:, -1]) if explainer.is_decoder else None
    for i, text in enumerate(TEXTS):  # one text at a time: no padding in the reference
        inputs = {
            k: v
            for k, v in explainer.tokenizer(text, return_tensors="pt").items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        entering, explained = _entering(explainer.model, inputs, projections, explainer.composite, output)
        assert heads.explained[i] == pytest.approx(float(explained[0]), abs=1e-10)
        for layer, name in enumerate(projections):
            value = entering[name][0]  # (tokens, heads x head_dim)
            assert value.shape[-1] % 4 == 0
            np.testing.assert_allclose(heads.relevance[i, layer].sum(), float(value.sum()), rtol=0, atol=1e-10)
            per_head = value.reshape(value.shape[0], 4, -1).sum((0, 2)).numpy()
            np.testing.assert_allclose(heads.relevance[i, layer], per_head, rtol=0, atol=1e-10)
    assert np.abs(heads.relevance).min() > 0


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_a_head_without_output_weights_carries_nothing(which, bert, llama):
    explainer = {"bert": bert, "llama": llama}[which]
    model = copy.deepcopy(explainer.model)
    layer, head, head_dim = 1, 2, 8
    projection = dict(model.named_modules())[attention_outputs(model)[layer]]
    with torch.no_grad():
        projection.weight[:, head * head_dim : (head + 1) * head_dim] = 0
    cut = TextExplainer(model, explainer.tokenizer, composite=explainer.composite)
    heads = head_relevance(cut, TEXTS, batch_size=2)
    assert np.abs(heads.relevance[:, layer, head]).max() < 1e-14
    others = np.delete(heads.relevance[:, layer], head, axis=1)
    assert np.abs(others).min() > 1e-6
    original = head_relevance(explainer, TEXTS, batch_size=2)
    assert np.abs(original.relevance[:, layer, head]).min() > 1e-6


# -- (c) padding does not change a text's results ---------------------------------------------------
@pytest.mark.parametrize("which", ["bert", "llama"])
def test_a_text_alone_equals_it_padded_in_a_batch(which, bert, llama):
    explainer = {"bert": bert, "llama": llama}[which]
    # HF's LLaMA computes its rotary angles in float32 with a matmul whose rounding depends on the
    # padded width (the model's own logits move by ~1e-7 there); BERT is float64 throughout
    rel = 1e-10 if which == "bert" else 1e-6
    (alone,) = layer_flow(explainer, [SHORT])
    padded, longer = layer_flow(explainer, [SHORT, LONG], batch_size=2)
    assert len(longer.tokens) > len(padded.tokens) == len(alone.tokens)
    assert padded.tokens == alone.tokens and padded.target == alone.target
    assert padded.explained == pytest.approx(alone.explained, rel=rel)
    np.testing.assert_allclose(padded.relevance, alone.relevance, rtol=0, atol=rel * np.abs(alone.relevance).max())
    heads_alone = head_relevance(explainer, SHORT)
    heads_padded = head_relevance(explainer, [SHORT, LONG], batch_size=2)
    scale = np.abs(heads_alone.relevance).max()
    np.testing.assert_allclose(heads_padded.relevance[0], heads_alone.relevance[0], rtol=0, atol=rel * scale)
    # nor does the batch size
    one_by_one = head_relevance(explainer, [SHORT, LONG], batch_size=1)
    np.testing.assert_allclose(one_by_one.relevance, heads_padded.relevance, rtol=0, atol=rel * scale)


# -- (d) the model comes back unchanged --------------------------------------------------------------
def _state(model):
    return {"model": snapshot(model), "attention": model.config._attn_implementation}


def _same(a, b):
    assert_unchanged(a["model"], b["model"])
    assert a["attention"] == b["attention"]


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_model_is_returned_unchanged_also_after_an_error(which, bert, llama):
    explainer = {"bert": bert, "llama": llama}[which]
    model = explainer.model
    model.train()  # a training flag that must survive (eval inside, this mode afterwards)
    model.bert.pooler.eval() if which == "bert" else model.model.norm.eval()
    before = _state(model)
    try:
        layer_flow(explainer, TEXTS, batch_size=2)
        head_relevance(explainer, TEXTS, batch_size=2)
        corpus_heads(explainer, TEXTS, batch_size=2)
        residual_stream(explainer)
        _same(before, _state(model))

        def broken(out):
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            layer_flow(explainer, TEXTS, target=broken)
        _same(before, _state(model))
        text = TEXTS[0]
        logits = _logits(explainer, text)
        (flow,) = layer_flow(explainer, text)
        assert flow.explained == pytest.approx(float(logits.max()), abs=1e-10)
    finally:
        model.eval()


# -- (e) clear errors ------------------------------------------------------------------------------
class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8, bias=False)

    def forward(self, x):
        return x + self.linear(x)


class _Bag(nn.Module):
    """Token embeddings, two residual blocks mixing nothing across tokens, the first token's
    state classified: no attention at all."""

    def __init__(self, vocab, layers=True, scale=None):
        super().__init__()
        self.scale = scale
        self.embed = nn.Embedding(vocab, 8)
        self.layers = nn.ModuleList([_Residual() for _ in range(2)]) if layers else None
        self.head = nn.Linear(8, 2, bias=False)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids)
        if self.scale is not None:  # as Gemma: no module outputs the stream entering the first block
            h = h * self.scale
        for layer in self.layers or []:
            h = layer(h)
        return self.head(h[:, 0])


def test_clear_errors_for_models_without_attention_or_blocks():
    tokenizer = T.wordpiece_tokenizer()
    torch.manual_seed(0)
    bag = TextExplainer(_Bag(tokenizer.vocab_size).double(), tokenizer, composite="cp-lrp")
    with pytest.raises(ValueError, match=r"no attention output projection in _Bag .*attention\.output\.dense"):
        head_relevance(bag, TEXTS)
    with pytest.raises(ValueError, match="no attention output projection in _Bag"):
        corpus_heads(bag, TEXTS)
    # the residual stream needs no attention: a list of blocks is enough
    (flow,) = layer_flow(bag, TEXTS[0])
    assert flow.layers == ["embed", "layers.0", "layers.1"]
    np.testing.assert_allclose(flow.relevance.sum(1), flow.explained, rtol=0, atol=1e-8)
    assert np.abs(flow.relevance[:, 1:]).max() == 0  # tokens never mix: only the first one counts
    # no module outputs the scaled embeddings: the first point is the first block's input
    torch.manual_seed(0)
    scaled = TextExplainer(_Bag(tokenizer.vocab_size, scale=3.0).double(), tokenizer, composite="cp-lrp")
    (again,) = layer_flow(scaled, TEXTS[0])
    assert again.layers == ["layers.0 (input)", "layers.0", "layers.1"]
    assert residual_stream(scaled) == again.layers
    np.testing.assert_allclose(again.relevance.sum(1), again.explained, rtol=0, atol=1e-8)
    token = scaled.explain(TEXTS[0])
    np.testing.assert_allclose(again.relevance[0], token.token_relevance.numpy(), rtol=0, atol=1e-10)
    flat = TextExplainer(_Bag(tokenizer.vocab_size, layers=False).double(), tokenizer)
    with pytest.raises(ValueError, match="no list of transformer blocks .* in _Bag"):
        layer_flow(flat, TEXTS[0])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        layer_flow(bag, TEXTS, batch_size=0)
    with pytest.raises(ValueError, match="no texts given"):
        layer_flow(bag, [])
    with pytest.raises(ValueError, match="top must be"):
        corpus_heads(bag, TEXTS, top=0)


@pytest.mark.parametrize(
    "arch, stream",
    [
        ("distilbert", ["distilbert.embeddings", "distilbert.transformer.layer.0", "distilbert.transformer.layer.1"]),
        ("electra", ["electra.embeddings_project", "electra.encoder.layer.0", "electra.encoder.layer.1"]),
        ("gpt2", ["transformer.drop", "transformer.h.0", "transformer.h.1"]),
    ],
)
def test_residual_stream_is_found_generically(arch, stream):
    explainer = _explainer(arch)
    assert residual_stream(explainer) == stream
    (flow,) = layer_flow(explainer, TEXTS[0])
    assert flow.layers == stream and np.isfinite(flow.relevance).all() and np.abs(flow.relevance).max() > 0


# -- (f) the heads that carry the decision on a corpus -----------------------------------------------
def test_corpus_heads_shares_and_order(bert):
    texts = T.SENTENCES
    frame = corpus_heads(bert, texts, batch_size=4, top=None)
    assert list(frame.columns) == ["layer_index", "layer", "head", "mean_relevance", "mean_abs_relevance", "share"]
    assert len(frame) == 2 * 4
    assert frame.share.sum() == pytest.approx(1.0, abs=1e-12)
    assert (np.diff(frame.share.to_numpy()) <= 0).all() and (frame.share > 0).all()
    heads = head_relevance(bert, texts, batch_size=3)
    for row in frame.itertuples():
        values = heads.relevance[:, row.layer_index, row.head]
        assert row.layer == heads.layers[row.layer_index]
        assert row.mean_relevance == pytest.approx(values.mean(), abs=1e-12)
        assert row.mean_abs_relevance == pytest.approx(np.abs(values).mean(), abs=1e-12)
    top = corpus_heads(bert, texts, batch_size=4, top=3)
    assert len(top) == 3
    assert top[["layer_index", "head"]].values.tolist() == frame[["layer_index", "head"]].values[:3].tolist()
    long = heads.to_frame()
    assert len(long) == heads.relevance.size
    assert long.groupby(["layer_index", "head"]).relevance.mean().abs().max() > 0


# -- report blocks -------------------------------------------------------------------------------
def test_report_figures_are_embedded_pngs(bert):
    from lrp_domains.report.latent_text import _label, head_figure, layer_flow_figure

    (flow,) = layer_flow(bert, "A $x$ <b>bold</b> film")
    heads = head_relevance(bert, TEXTS)
    for block in (layer_flow_figure(flow), head_figure(heads, caption="heads & <tags>")):
        match = re.search(r'src="data:image/png;base64,([^"]+)"', str(block))
        assert match and base64.b64decode(match.group(1)).startswith(b"\x89PNG")
    assert "heads &amp; &lt;tags&gt;" in str(head_figure(heads, caption="heads & <tags>"))
    assert _label("bert.encoder.layer.3") == "layer 3"
    assert _label("model.layers.1.self_attn.o_proj") == "layer 1"
    assert _label("bert.embeddings") == "embeddings"


def test_decoder_targets_come_from_the_explainers_one_resolver(llama, monkeypatch):
    import inspect

    import lrp_domains.text.latent as latent

    assert not re.search(r"explainer\._\w+", inspect.getsource(latent))  # no private explainer calls
    prompts = TEXTS[:2]
    for target in ("▁Paris", 7, ["▁Paris", 7], None):
        explained = llama.explain_next_token(prompts, target=target)
        flows = layer_flow(llama, prompts, target=target)
        assert [f.target for f in flows] == [e.target for e in explained]
        assert [f.explained for f in flows] == pytest.approx([e.explained for e in explained], abs=1e-10)
    calls = []
    resolve = TextExplainer.resolve_targets

    def spy(self, target, n):
        calls.append(target)
        return resolve(self, target, n)

    monkeypatch.setattr(TextExplainer, "resolve_targets", spy)
    layer_flow(llama, prompts, target=["▁Paris", 7])
    head_relevance(llama, prompts, target=7)
    assert calls == [["▁Paris", 7], 7]
    monkeypatch.undo()
    for broken, message in (([None, 7], "for every prompt, or for none"), ([7], "got 1 targets for 2 prompts")):
        with pytest.raises(ValueError, match=message):
            llama.explain_next_token(prompts, target=broken)
        with pytest.raises(ValueError, match=message):
            layer_flow(llama, prompts, target=broken)
