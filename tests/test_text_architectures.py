"""AttnLRP and CP-LRP on every supported architecture: identical outputs, full rule coverage,
per-instance application undone on exit, padding-independent results, conservation."""

import pytest
import text_models as T
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.text import TextExplainer

pytest.importorskip("transformers")

ALL = [("encoder", a) for a in T.ENCODERS] + [("decoder", a) for a in T.DECODERS]
VARIANTS = ("attnlrp", "cp-lrp")


def _model(kind, arch, **kw):
    return T.encoder(arch, **kw) if kind == "encoder" else T.decoder(arch, **kw)


def _ids(kind, seed=0, length=9, batch=3):
    g = torch.Generator().manual_seed(seed)
    high = T.wordpiece_tokenizer().vocab_size if kind == "encoder" else 300
    return torch.randint(5, high, (batch, length), generator=g)


def _relevance(model, ids, variant, explained_fn, **kwargs):
    """One explanation inside the composite; per-source token relevance and the output."""
    result = L.explain(
        model,
        {"input_ids": ids},
        target=explained_fn,
        composite=L.composites.get(variant, **kwargs),
        strict=True,
        sources=nn.Embedding,
        check_delta=False,
    )
    return result.output, result.explained, {name: value.sum(-1) for name, value in result.sources.items()}


def _head(kind):
    if kind == "encoder":
        return lambda out: out[:, 1]
    return lambda out: out[:, -1, 7]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("kind", "arch"), ALL)
def test_outputs_identical_strict_coverage_and_restored(kind, arch, variant):
    model = _model(kind, arch)
    ids = _ids(kind)
    before = model(input_ids=ids).logits
    implementation = model.config._attn_implementation
    out, explained, relevance = _relevance(model, ids, variant, _head(kind))
    assert torch.equal(out, before)
    assert model.config._attn_implementation == implementation
    assert not any("forward" in vars(m) for m in model.modules())
    assert torch.equal(model(input_ids=ids).logits, before)
    total = sum(v.sum(-1) for v in relevance.values())
    assert torch.isfinite(total).all() and bool((total != 0).all())
    assert model.get_input_embeddings() is not None


@pytest.mark.parametrize(("kind", "arch"), [("encoder", "bert"), ("decoder", "llama"), ("decoder", "gpt2")])
def test_eager_models_stay_eager_and_identical(kind, arch):
    model = _model(kind, arch)
    model.set_attn_implementation("eager")
    ids = _ids(kind)
    before = model(input_ids=ids).logits
    for variant in VARIANTS:
        out, _, _ = _relevance(model, ids, variant, _head(kind))
        assert torch.equal(out, before)
    assert model.config._attn_implementation == "eager"


def test_attention_wrapping_keeps_the_causal_mask():
    """Inside the context a decoder's logits at position t must not depend on later tokens."""
    model = T.decoder("llama")
    ids = _ids("decoder", length=8, batch=1)
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 300
    with L.composites.get("attnlrp").context(model):
        a, b = model(input_ids=ids).logits, model(input_ids=changed).logits
    assert torch.equal(a[:, :-1], b[:, :-1])
    assert not torch.equal(a[:, -1], b[:, -1])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("kind", "arch"), ALL)
def test_padding_never_changes_a_texts_result(kind, arch, variant):
    tokenizer = (
        T.wordpiece_tokenizer()
        if kind == "encoder"
        else (T.bytelevel_tokenizer() if arch == "gpt2" else T.sentencepiece_tokenizer())
    )
    model = _model(kind, arch, **({} if kind == "encoder" else {"vocab_size": len(tokenizer)}))
    explainer = TextExplainer(model, tokenizer, composite=variant, strict=True)
    texts = T.SENTENCES[:4]
    target = 1 if kind == "encoder" else 5
    batched = explainer.explain(texts, target=target, batch_size=4)
    for text, together in zip(texts, batched):
        alone = explainer.explain(text, target=target)
        torch.testing.assert_close(together.token_relevance, alone.token_relevance, rtol=1e-7, atol=1e-10)
        assert together.explained == pytest.approx(alone.explained, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("kind", "arch", "kwargs"),
    [
        ("decoder", "llama", {}),
        ("decoder", "mistral", {}),
        ("decoder", "gemma", {}),
        ("encoder", "bert", {"zero_biases": True}),
    ],
)
def test_cp_lrp_conserves_on_models_without_biases(kind, arch, kwargs):
    model = _model(kind, arch)
    if kwargs.get("zero_biases"):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
    ids = _ids(kind)
    _, explained, relevance = _relevance(model, ids, "cp-lrp", _head(kind), epsilon=1e-12)
    total = sum(v.sum(-1) for v in relevance.values())
    torch.testing.assert_close(total, explained, rtol=1e-4, atol=0)


def test_explaining_a_llama_then_a_bert_in_one_process():
    llama, bert = T.decoder("llama"), T.encoder("bert")
    first = _relevance(llama, _ids("decoder"), "attnlrp", _head("decoder"))[2]
    _relevance(bert, _ids("encoder"), "cp-lrp", _head("encoder"))
    again = _relevance(llama, _ids("decoder"), "attnlrp", _head("decoder"))[2]
    for name in first:
        torch.testing.assert_close(first[name], again[name])


def test_model_is_restored_after_an_exception_in_forward():
    model = T.decoder("llama")
    implementation = model.config._attn_implementation
    with pytest.raises(IndexError):
        with L.composites.get("cp-lrp").context(model):
            model(input_ids=torch.tensor([[5, 400]]))  # out of the vocabulary
    assert model.config._attn_implementation == implementation
    assert not any("forward" in vars(m) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_layernorm_subclasses_get_the_same_rule_as_layernorm():
    """A LayerNorm subclass takes the generic path (its own forward, the std recomputed); it must
    agree with the fused path nn.LayerNorm takes."""

    class MyLayerNorm(nn.LayerNorm):
        pass

    model = T.encoder("bert")
    ids = _ids("encoder")
    reference = _relevance(model, ids, "attnlrp", _head("encoder"))[2]
    for name, module in list(model.named_modules()):
        if type(module) is nn.LayerNorm:
            replacement = MyLayerNorm(module.normalized_shape, eps=module.eps).double()
            replacement.load_state_dict(module.state_dict())
            model.set_submodule(name, replacement)
    generic = _relevance(model, ids, "attnlrp", _head("encoder"))[2]
    for name in reference:
        torch.testing.assert_close(generic[name], reference[name])


def test_strict_mode_names_a_part_without_a_rule():
    """Swap BERT's GELU for an activation the composite does not know: strict mode names the
    operation and the module it ran in, instead of silently using its gradient."""

    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)

    model = T.encoder("bert")
    for layer in model.bert.encoder.layer:
        layer.intermediate.intermediate_act_fn = Swish()
    where = r"sigmoid in 'bert.encoder.layer.0.intermediate.intermediate_act_fn' \(Swish\)"
    with pytest.raises(L.LRPCoverageError, match=where):
        _relevance(model, _ids("encoder"), "attnlrp", _head("encoder"))


@pytest.mark.parametrize("variant", ["attnlrp", "cp-lrp"])
def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_relevance(variant):
    """transformers checkpoints a layer only in training mode: explaining keeps that layer (alone)
    in training mode, so activations are recomputed in the backward, with identical relevance."""
    model = _model("decoder", "llama")
    ids = _ids("decoder")
    head = _head("decoder")
    plain = _relevance(model, ids, variant, head)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    layer = model.model.layers[0]
    seen, recomputed = [], []
    pre = layer.register_forward_pre_hook(lambda m, a: seen.append((m.training, m.self_attn.training)))
    mlp_calls = []
    mlp_hook = layer.mlp.register_forward_pre_hook(lambda m, a: mlp_calls.append(torch.is_grad_enabled()))
    try:
        model.eval()
        checkpointed = _relevance(model, ids, variant, head)
    finally:
        pre.remove()
        mlp_hook.remove()
        model.activation_checkpointing_disable()
    recomputed = len(mlp_calls)
    assert seen and all(flags == (True, False) for flags in seen)  # the layer trains, its attention does not
    assert recomputed >= 2  # the forward, and the recompute in the backward
    assert not any(m.training for m in model.modules())
    torch.testing.assert_close(checkpointed, plain, rtol=0, atol=1e-12)


def test_a_checkpointed_layer_that_drops_out_itself_stays_in_eval_mode():
    from lrp_domains.core.engine.attribution import eval_mode

    class Layer(nn.Module):
        def __init__(self, dropout):
            super().__init__()
            self.gradient_checkpointing = True
            self.dropout = dropout
            self.inner = nn.Dropout(0.5)

    model = nn.Sequential(Layer(0.0), Layer(0.1)).train()
    with eval_mode(model):
        assert [model[0].training, model[1].training, model[0].inner.training] == [True, False, False]
    assert all(m.training for m in model.modules())
