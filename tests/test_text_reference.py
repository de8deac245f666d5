"""Self-checks of the explicit-relevance AttnLRP / CP-LRP reference in ``text_reference``.

1. Its re-implemented forward equals the Hugging Face models' logits.
2. CP-LRP conserves on bias-free models; AttnLRP conserves up to exactly what the softmax's Taylor
   rule absorbs (its ``softmax_absorbed`` diagnostic), which is not zero.
3. It equals an independent formulation: Gradient x Input of a modified network (std/rms detached,
   activations as x * (act(x)/x).detach(), half gradients through products, CP-LRP's detached
   attention/gate). With the epsilon rule at eps -> 0 every rule here is Input x modified Gradient,
   so the two must agree to ~1e-9.
"""

from __future__ import annotations

import pytest
import torch
from text_reference import (
    bert_forward,
    bert_relevance,
    llama_forward,
    llama_relevance,
    tiny_bert,
    tiny_llama,
)
from torch.nn import functional as F

D = torch.float64
VARIANTS = ("attnlrp", "cp-lrp")


def _ids(n, seed=1, vocab=100):
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def bert():
    return tiny_bert(seed=0)


@pytest.fixture(scope="module")
def bert_nobias():
    return tiny_bert(seed=1, zero_biases=True)


@pytest.fixture(scope="module")
def llama():
    return tiny_llama(seed=0)


def _bert_total(r):
    return r["word"].sum() + r["position"].sum() + r["token_type"].sum()


def _close_rel(a, b, rel):
    return abs(float(a) - float(b)) <= rel * max(abs(float(b)), 1e-12)


# ------------------------------------------------------------------------------------ forward


def test_bert_forward_matches_hf(bert):
    ids = _ids(9)
    for tt in (None, torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1]])):
        with torch.no_grad():
            ref = bert(ids, token_type_ids=tt).logits[0]
        err = (bert_forward(bert, ids, tt)["logits"] - ref).abs().max().item()
        assert err < 1e-10, err


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_llama_forward_matches_hf(kv_heads):
    model = tiny_llama(seed=3, num_key_value_heads=kv_heads)
    ids = _ids(11, seed=4)
    with torch.no_grad():
        ref = model(ids).logits[0]
    err = (llama_forward(model, ids, hf_precision=True)["logits"] - ref).abs().max().item()
    assert err < 1e-10, err
    # pure float64 differs only by HF's float32 RMSNorm / rotary / softmax
    err64 = (llama_forward(model, ids, hf_precision=False)["logits"] - ref).abs().max().item()
    assert err64 < 1e-4 * ref.abs().max().item(), err64


# ------------------------------------------------------------------------------------ basic properties


@pytest.mark.parametrize("variant", VARIANTS)
def test_outputs_finite_nonzero(bert, llama, variant):
    ids = _ids(7)
    rb = bert_relevance(bert, ids, 2, variant, token_type_ids=torch.tensor([[0, 0, 0, 1, 1, 1, 1]]))
    rl = llama_relevance(llama, ids, 17, variant)
    assert set(rb) == {"logit", "word", "position", "token_type"} and set(rl) == {"logit", "word"}
    for key in ("word", "position", "token_type"):
        assert rb[key].shape == (7,) and torch.isfinite(rb[key]).all() and rb[key].abs().max() > 1e-6
    assert rl["word"].shape == (7,) and torch.isfinite(rl["word"]).all() and rl["word"].abs().max() > 1e-6
    assert rb["logit"].dim() == 0 and rl["logit"].dim() == 0


def test_variants_differ(bert, llama):
    ids = _ids(8)
    a, c = (bert_relevance(bert, ids, 0, v)["word"] for v in VARIANTS)
    assert (a - c).abs().max() > 1e-3 * c.abs().max()
    a, c = (llama_relevance(llama, ids, 3, v)["word"] for v in VARIANTS)
    assert (a - c).abs().max() > 1e-3 * c.abs().max()


# ------------------------------------------------------------------------------------ conservation


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("target", [0, 42])
def test_cp_lrp_conserves_on_llama(kv_heads, target):
    model = tiny_llama(seed=5, num_key_value_heads=kv_heads)
    r = llama_relevance(model, _ids(10, seed=6), target, "cp-lrp")
    assert _close_rel(r["word"].sum(), r["logit"], 1e-6), (r["word"].sum(), r["logit"])


@pytest.mark.parametrize("target", [0, 1, 2])
def test_cp_lrp_conserves_on_bias_free_bert(bert_nobias, target):
    r = bert_relevance(
        bert_nobias, _ids(9, seed=7), target, "cp-lrp", token_type_ids=torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1]])
    )
    assert _close_rel(_bert_total(r), r["logit"], 1e-6), (_bert_total(r), r["logit"])


def test_attnlrp_conserves_up_to_softmax_absorption(llama, bert_nobias):
    """Every AttnLRP rule but the softmax's conserves on bias-free models; the softmax passes only its
    Taylor term on and the rest (the expansion's additive bias) is lost, so the sum is off the logit by
    exactly ``softmax_absorbed``, which is far from zero."""
    r = llama_relevance(llama, _ids(10, seed=8), 9, "attnlrp", details=True)
    assert _close_rel(r["word"].sum() + r["softmax_absorbed"], r["logit"], 1e-6)
    assert abs(float(r["softmax_absorbed"])) > 1e-2 * abs(float(r["logit"]))
    r = bert_relevance(bert_nobias, _ids(10, seed=8), 1, "attnlrp", details=True)
    assert _close_rel(_bert_total(r) + r["softmax_absorbed"], r["logit"], 1e-6)
    assert abs(float(r["softmax_absorbed"])) > 1e-2 * abs(float(r["logit"]))


def test_single_token_attnlrp_passes_half_through_attention(llama):
    """With one token the softmax is constant (p = 1): AttnLRP's softmax rule gives the scores nothing, so
    the softmax absorbs exactly the half of A V's relevance that the uniform rule gave to A."""
    r = llama_relevance(llama, _ids(1, seed=9), 4, "attnlrp", details=True)
    assert _close_rel(r["word"].sum() + r["softmax_absorbed"], r["logit"], 1e-6)
    c = llama_relevance(llama, _ids(1, seed=9), 4, "cp-lrp", details=True)
    assert float(c["softmax_absorbed"]) == 0.0 and _close_rel(c["word"].sum(), c["logit"], 1e-6)


# ------------------------------------------------------------------------------------ Input x modified Gradient


def _ident(fn, x):
    """Identity rule as a modified gradient: value fn(x), gradient fn(x) / x."""
    return x * (fn(x) / x).detach()


def _prod(a, b, op, variant, const_first):
    if variant == "attnlrp":
        return 0.5 * (op(a, b.detach()) + op(a.detach(), b))
    return op(a.detach(), b) if const_first else op(a, b.detach())


def _mg_attention(x, w, n_heads, n_kv, rope, causal, variant):
    t = x.shape[0]
    dh = w["q_w"].shape[0] // n_heads

    def lin(n):
        return F.linear(x, w[n + "_w"], w.get(n + "_b"))

    q = lin("q").view(t, n_heads, dh).transpose(0, 1)
    k = lin("k").view(t, n_kv, dh).transpose(0, 1)
    v = lin("v").view(t, n_kv, dh).transpose(0, 1)
    if rope is not None:
        cos, sin = rope
        half = dh // 2

        def rot(y):
            return y * cos + torch.cat((-y[..., half:], y[..., :half]), -1) * sin

        q, k = rot(q), rot(k)
    k = k.repeat_interleave(n_heads // n_kv, 0)
    v = v.repeat_interleave(n_heads // n_kv, 0)
    if variant == "attnlrp":
        s = _prod(q, k.transpose(-1, -2), torch.matmul, variant, False) * dh**-0.5
    else:
        s = (q @ k.transpose(-1, -2)).detach() * dh**-0.5
    if causal:
        s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    a = torch.softmax(s, -1)
    out = _prod(a, v, torch.matmul, variant, True)
    return F.linear(out.transpose(0, 1).reshape(t, -1), w["o_w"], w.get("o_b"))


def _mg_bert(model, ids, tt, target, variant):
    cfg = model.config
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    t = ids.shape[1]
    embs = [
        sd["bert.embeddings.word_embeddings.weight"][ids[0]].clone().requires_grad_(),
        sd["bert.embeddings.token_type_embeddings.weight"][tt[0]].clone().requires_grad_(),
        sd["bert.embeddings.position_embeddings.weight"][:t].clone().requires_grad_(),
    ]

    def ln(x, pre):
        xc = x - x.mean(-1, keepdim=True)
        std = torch.sqrt((xc**2).mean(-1, keepdim=True) + cfg.layer_norm_eps).detach()
        return xc / std * sd[pre + ".weight"] + sd[pre + ".bias"]

    h = ln(embs[0] + embs[1] + embs[2], "bert.embeddings.LayerNorm")
    for i in range(cfg.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        w = {
            f"{n}_{s}": sd[p + f"attention.self.{m}.{'weight' if s == 'w' else 'bias'}"]
            for n, m in (("q", "query"), ("k", "key"), ("v", "value"))
            for s in ("w", "b")
        }
        w.update(o_w=sd[p + "attention.output.dense.weight"], o_b=sd[p + "attention.output.dense.bias"])
        a = ln(
            _mg_attention(h, w, cfg.num_attention_heads, cfg.num_attention_heads, None, False, variant) + h,
            p + "attention.output.LayerNorm",
        )
        f = _ident(F.gelu, F.linear(a, sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"]))
        h = ln(F.linear(f, sd[p + "output.dense.weight"], sd[p + "output.dense.bias"]) + a, p + "output.LayerNorm")
    pooled = _ident(torch.tanh, F.linear(h[0], sd["bert.pooler.dense.weight"], sd["bert.pooler.dense.bias"]))
    F.linear(pooled, sd["classifier.weight"], sd["classifier.bias"])[target].backward()
    return [(e * e.grad).sum(-1) for e in embs]  # word, token_type, position


def _mg_llama(model, ids, target, variant):
    cfg = model.config
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    t = ids.shape[1]
    dh = cfg.hidden_size // cfg.num_attention_heads
    inv = 1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, dh, 2, dtype=D) / dh))
    ang = torch.arange(t, dtype=D)[:, None] * inv
    rope = (torch.cat((ang, ang), -1).cos(), torch.cat((ang, ang), -1).sin())

    def rms(x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps).detach() * sd[name]

    emb = sd["model.embed_tokens.weight"][ids[0]].clone().requires_grad_()
    h = emb
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w = {n + "_w": sd[p + f"self_attn.{n}_proj.weight"] for n in "qkvo"}
        h = h + _mg_attention(
            rms(h, p + "input_layernorm.weight"),
            w,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            rope,
            True,
            variant,
        )
        x = rms(h, p + "post_attention_layernorm.weight")
        g = _ident(F.silu, F.linear(x, sd[p + "mlp.gate_proj.weight"]))
        u = F.linear(x, sd[p + "mlp.up_proj.weight"])
        h = h + F.linear(_prod(g, u, torch.mul, variant, True), sd[p + "mlp.down_proj.weight"])
    F.linear(rms(h, "model.norm.weight")[-1], sd["lm_head.weight"])[target].backward()
    return (emb * emb.grad).sum(-1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bert_equals_input_times_modified_gradient(bert, variant):
    ids, tt = _ids(8, seed=11), torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    r = bert_relevance(bert, ids, 2, variant, token_type_ids=tt)
    word, tok, pos = _mg_bert(bert, ids, tt, 2, variant)
    scale = max(r["word"].abs().max(), r["position"].abs().max(), r["token_type"].abs().max())
    for mine, theirs in ((r["word"], word), (r["token_type"], tok), (r["position"], pos)):
        assert (mine - theirs).abs().max() < 1e-9 * scale


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kv_heads", [2, 4])
def test_llama_equals_input_times_modified_gradient(variant, kv_heads):
    model = tiny_llama(seed=12, num_key_value_heads=kv_heads)
    ids = _ids(9, seed=13)
    r = llama_relevance(model, ids, 21, variant, hf_precision=False)
    mg = _mg_llama(model, ids, 21, variant)
    assert (r["word"] - mg).abs().max() < 1e-9 * r["word"].abs().max()
    # HF's float32 RMSNorm / rotary / softmax move the default (hf_precision=True) result only slightly
    hp = llama_relevance(model, ids, 21, variant)["word"]
    assert (hp - r["word"]).abs().max() < 1e-4 * r["word"].abs().max()
