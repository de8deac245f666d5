"""Explicit-relevance reference for AttnLRP and CP-LRP on tiny Hugging Face BERT and LLaMA models.

Ground truth for the text tests. Each model's forward pass is re-implemented here in plain torch
(float64), keeping every intermediate activation; a relevance vector is then passed backwards layer
by layer, applying each rule's relevance formula directly (no autograd, no ``lrp_domains``, no
transformers ``forward``; transformers only builds the models and hands over ``state_dict()``).

Rules (``stab(z) = z + eps * sign(z)``, ``sign(0) = +1``):

* Linear ``z = W x + b``: epsilon rule ``R_x = x * W^T (R_z / stab(z))``; biases absorb relevance.
* Sums (residuals, ``word + token_type + position``): proportional rule ``R_a = a / stab(z) * R_z``.
* GELU, SiLU, the pooler's tanh: identity ``R_in = R_out``.
* LayerNorm with the std held constant: ``y = M x + beta``, ``M = diag(w / std) (I - 1/d)``; epsilon
  rule on that affine map. RMSNorm with the rms held constant: identity.
* Rotary embedding: the per-position linear map ``q' = Rot_t q`` (no bias); epsilon rule.
* Scores ``s = scale * q k^T + mask``: epsilon rule for the constant mask bias (identity where the
  mask is 0; masked entries carry nothing).
* Products of two input-dependent factors (``q k^T``, ``A V``, ``act(gate) * up``): epsilon rule over
  the summation index, then the uniform rule (half of each term to each factor).
* Softmax, AttnLRP: ``R_s = s * (R_p - p * sum(R_p))`` (first-order Taylor, Achtibat et al. 2024).
* CP-LRP (Ali et al. 2022): attention probabilities and the MLP gate are constants: all of ``A V``'s
  relevance goes to ``V`` and all of ``g * u``'s to ``u``; nothing reaches the softmax, q, k or gate.
* Grouped-query attention: relevance of a shared key/value head is summed over its query heads.

Precision: LLaMA's HF code computes RMSNorm, the rotary angles and the attention softmax in float32
even in a float64 model. ``hf_precision=True`` (the default) reproduces those casts so that the
activations equal HF's to ~1e-15; ``hf_precision=False`` computes everything in float64.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

DTYPE = torch.float64

__all__ = ["bert_relevance", "llama_relevance", "bert_forward", "llama_forward", "tiny_bert", "tiny_llama"]


# ----------------------------------------------------------------------------------------------
# rule primitives
# ----------------------------------------------------------------------------------------------


def stab(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + eps * sign(z) with sign(0) = +1."""
    return z + eps * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


def _linear(x, w, b):
    z = x @ w.T
    return z if b is None else z + b


def _linear_rel(x, w, z, r, eps):
    """Epsilon rule for z = x W^T + b (rows of x are independent inputs): R_x = x * W^T (R_z / stab(z))."""
    return x * ((r / stab(z, eps)) @ w)


def _sum_rel(parts, r, eps):
    """Proportional rule for z = sum(parts): R_part = part / stab(z) * R_z."""
    z = parts[0]
    for p in parts[1:]:
        z = z + p
    c = r / stab(z, eps)
    return [p * c for p in parts]


def _affine_rel(x, m, y, r, eps):
    """Epsilon rule for a per-row affine map y_t = M_t x_t + beta: R_x = x * M_t^T (R_y / stab(y))."""
    return x * torch.einsum("tab,ta->tb", m, r / stab(y, eps))


def _act(name: str):
    acts = {
        "gelu": F.gelu,
        "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
        "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
        "relu": F.relu,
        "silu": F.silu,
        "swish": F.silu,
    }
    if name not in acts:
        raise ValueError(f"unsupported activation {name!r}")
    return acts[name]


def _layernorm(x, w, b, ln_eps):
    """LayerNorm forward plus the constant-std affine matrix M (T, d, d) with y = M x + b."""
    d = x.shape[-1]
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    std = torch.sqrt(var + ln_eps)
    y = (x - mean) / std * w + b
    center = torch.eye(d, dtype=x.dtype) - torch.full((d, d), 1.0 / d, dtype=x.dtype)
    m = (w[None, :, None] / std[:, :, None]) * center[None]
    assert torch.allclose(torch.einsum("tab,tb->ta", m, x) + b, y, rtol=1e-9, atol=1e-9)
    return y, m


def _rmsnorm(x, w, rms_eps, hf_precision):
    if hf_precision:  # LlamaRMSNorm: float32 inside, cast back, then the weight
        x32 = x.to(torch.float32)
        return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + rms_eps)).to(x.dtype)
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + rms_eps))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope_tables(config, positions, head_dim, hf_precision):
    rope = dict(getattr(config, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"unsupported rope type {rope.get('rope_type')!r}")
    base = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    if hf_precision:  # LlamaRotaryEmbedding: inv_freq and angles in float32, cos/sin cast afterwards
        inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        freqs = positions.float()[:, None] * inv[None, :]
    else:
        inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=DTYPE) / head_dim))
        freqs = positions.to(DTYPE)[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(DTYPE), emb.sin().to(DTYPE)
    # the explicit linear map: Rot_t = diag(cos_t) + diag(sin_t) P, with P q = rotate_half(q)
    half = head_dim // 2
    p = torch.zeros(head_dim, head_dim, dtype=DTYPE)
    idx = torch.arange(half)
    p[idx, idx + half] = -1.0
    p[idx + half, idx] = 1.0
    rot = torch.diag_embed(cos) + sin[:, :, None] * p[None]
    return cos, sin, rot


# ----------------------------------------------------------------------------------------------
# attention block (shared by BERT and LLaMA)
# ----------------------------------------------------------------------------------------------


def _attention_forward(x, prm, n_heads, n_kv, head_dim, rope, causal, softmax_fp32):
    """Multi-head (grouped-query) self-attention on x (T, D); returns the output and a cache."""
    t = x.shape[0]
    rep = n_heads // n_kv
    q_lin = _linear(x, prm["q_w"], prm["q_b"])
    k_lin = _linear(x, prm["k_w"], prm["k_b"])
    v_lin = _linear(x, prm["v_w"], prm["v_b"])
    qh = q_lin.view(t, n_heads, head_dim).transpose(0, 1)  # (H, T, dh)
    kh = k_lin.view(t, n_kv, head_dim).transpose(0, 1)  # (Hkv, T, dh)
    vh = v_lin.view(t, n_kv, head_dim).transpose(0, 1)
    if rope is not None:
        cos, sin, rot = rope
        qr = qh * cos + _rotate_half(qh) * sin
        kr = kh * cos + _rotate_half(kh) * sin
        assert torch.allclose(torch.einsum("tab,htb->hta", rot, qh), qr, rtol=1e-10, atol=1e-12)
    else:
        qr, kr = qh, kh
    k_rep = kr.repeat_interleave(rep, dim=0)  # query head h uses kv head h // rep
    v_rep = vh.repeat_interleave(rep, dim=0)
    scale = head_dim**-0.5
    s_pre = torch.matmul(qr, k_rep.transpose(-1, -2)) * scale  # (H, T, T)
    if causal:
        keep = torch.ones(t, t, dtype=torch.bool).tril()
        mask = torch.full((t, t), torch.finfo(DTYPE).min, dtype=DTYPE).masked_fill(keep, 0.0)
    else:
        keep = torch.ones(t, t, dtype=torch.bool)
        mask = torch.zeros(t, t, dtype=DTYPE)
    s = s_pre + mask
    if softmax_fp32:
        a = torch.softmax(s.to(torch.float32), dim=-1).to(DTYPE)
    else:
        a = torch.softmax(s, dim=-1)
    out = torch.matmul(a, v_rep)  # (H, T, dh)
    merged = out.transpose(0, 1).reshape(t, n_heads * head_dim)
    o = _linear(merged, prm["o_w"], prm["o_b"])
    cache = dict(
        x=x,
        q_lin=q_lin,
        k_lin=k_lin,
        v_lin=v_lin,
        qh=qh,
        kh=kh,
        vh=vh,
        qr=qr,
        kr=kr,
        k_rep=k_rep,
        v_rep=v_rep,
        s_pre=s_pre,
        s=s,
        mask=mask,
        keep=keep,
        a=a,
        out=out,
        merged=merged,
        o=o,
        scale=scale,
        rope=rope,
        n_heads=n_heads,
        n_kv=n_kv,
        head_dim=head_dim,
    )
    return o, cache


def _attention_rel(c, prm, r_o, variant, eps):
    """Relevance at the attention input x given the relevance at the attention output. Also returns
    the relevance the softmax absorbed (sum of R at A minus sum of R at the scores)."""
    t = c["x"].shape[0]
    n_heads, n_kv, dh = c["n_heads"], c["n_kv"], c["head_dim"]
    rep = n_heads // n_kv
    # output projection
    r_merged = _linear_rel(c["merged"], prm["o_w"], c["o"], r_o, eps)
    r_out = r_merged.view(t, n_heads, dh).transpose(0, 1)  # (H, T, dh)
    # out[h,i,j] = sum_k A[h,i,k] V[h,k,j]: epsilon over k, then split each term between A and V
    a, v_rep = c["a"], c["v_rep"]
    term = a[:, :, :, None] * v_rep[:, None, :, :]  # (H, i, k, j)
    r_term = term / stab(c["out"], eps)[:, :, None, :] * r_out[:, :, None, :]
    share_a, share_v = (0.5, 0.5) if variant == "attnlrp" else (0.0, 1.0)
    r_a = share_a * r_term.sum(-1)  # (H, i, k)
    r_v_rep = share_v * r_term.sum(1)  # (H, k, j)
    r_vh = r_v_rep.view(n_kv, rep, t, dh).sum(1)  # GQA: sum over the query heads sharing a kv head
    r_x = _linear_rel(c["x"], prm["v_w"], c["v_lin"], r_vh.transpose(0, 1).reshape(t, n_kv * dh), eps)
    absorbed = torch.zeros((), dtype=DTYPE)
    if variant == "attnlrp":
        keep = c["keep"]
        s, s_pre = c["s"], c["s_pre"]
        # softmax, first-order Taylor: R_s = s * (R_p - p * sum_j R_p)
        r_s = s * (r_a - a * r_a.sum(-1, keepdim=True))
        r_s = torch.where(keep, r_s, torch.zeros_like(r_s))
        # additive mask bias, epsilon rule: R_pre = s_pre / stab(s) * R_s (masked entries carry nothing)
        r_pre = torch.where(keep, s_pre / stab(s, eps) * r_s, torch.zeros_like(r_s))
        absorbed = r_a.sum() - r_pre.sum()
        # s_pre[h,i,j] = sum_c scale q[h,i,c] k[h,j,c]: epsilon over c, then uniform split
        qr, k_rep = c["qr"], c["k_rep"]
        qterm = c["scale"] * qr[:, :, None, :] * k_rep[:, None, :, :]  # (H, i, j, c)
        r_qterm = qterm / stab(s_pre, eps)[..., None] * r_pre[..., None]
        r_qr = 0.5 * r_qterm.sum(2)  # (H, i, c)
        r_krep = 0.5 * r_qterm.sum(1)  # (H, j, c)
        r_kr = r_krep.view(n_kv, rep, t, dh).sum(1)
        if c["rope"] is not None:
            rot = c["rope"][2]
            r_qh = c["qh"] * torch.einsum("tab,hta->htb", rot, r_qr / stab(qr, eps))
            r_kh = c["kh"] * torch.einsum("tab,hta->htb", rot, r_kr / stab(c["kr"], eps))
        else:
            r_qh, r_kh = r_qr, r_kr
        r_x = r_x + _linear_rel(c["x"], prm["q_w"], c["q_lin"], r_qh.transpose(0, 1).reshape(t, n_heads * dh), eps)
        r_x = r_x + _linear_rel(c["x"], prm["k_w"], c["k_lin"], r_kh.transpose(0, 1).reshape(t, n_kv * dh), eps)
    return r_x, absorbed


def _check_variant(variant):
    if variant not in ("attnlrp", "cp-lrp"):
        raise ValueError(f"variant must be 'attnlrp' or 'cp-lrp', not {variant!r}")


def _params(model):
    return {k: v.detach().to(DTYPE) for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# BERT
# ----------------------------------------------------------------------------------------------


def bert_forward(model, input_ids, token_type_ids=None) -> dict:
    """Re-implemented BertForSequenceClassification forward; returns every activation (batch of 1)."""
    cfg = model.config
    if getattr(cfg, "position_embedding_type", None) not in (None, "absolute") or cfg.is_decoder:
        raise ValueError("only absolute position embeddings and encoder BERT are supported")
    sd = _params(model)
    ids = input_ids.reshape(-1)
    t = ids.shape[0]
    tt = torch.zeros_like(ids) if token_type_ids is None else token_type_ids.reshape(-1)
    word = sd["bert.embeddings.word_embeddings.weight"][ids]
    tok = sd["bert.embeddings.token_type_embeddings.weight"][tt]
    pos = sd["bert.embeddings.position_embeddings.weight"][torch.arange(t)]
    e = word + tok + pos
    h, m = _layernorm(
        e, sd["bert.embeddings.LayerNorm.weight"], sd["bert.embeddings.LayerNorm.bias"], cfg.layer_norm_eps
    )
    act = _act(cfg.hidden_act)
    n_heads = cfg.num_attention_heads
    dh = cfg.hidden_size // n_heads
    layers = []
    for i in range(cfg.num_hidden_layers):
        pre = f"bert.encoder.layer.{i}."
        prm = {
            "q_w": sd[pre + "attention.self.query.weight"],
            "q_b": sd[pre + "attention.self.query.bias"],
            "k_w": sd[pre + "attention.self.key.weight"],
            "k_b": sd[pre + "attention.self.key.bias"],
            "v_w": sd[pre + "attention.self.value.weight"],
            "v_b": sd[pre + "attention.self.value.bias"],
            "o_w": sd[pre + "attention.output.dense.weight"],
            "o_b": sd[pre + "attention.output.dense.bias"],
        }
        o, att = _attention_forward(h, prm, n_heads, n_heads, dh, None, causal=False, softmax_fp32=False)
        z1 = o + h
        a1, m1 = _layernorm(
            z1,
            sd[pre + "attention.output.LayerNorm.weight"],
            sd[pre + "attention.output.LayerNorm.bias"],
            cfg.layer_norm_eps,
        )
        f_pre = _linear(a1, sd[pre + "intermediate.dense.weight"], sd[pre + "intermediate.dense.bias"])
        f_act = act(f_pre)
        f_out = _linear(f_act, sd[pre + "output.dense.weight"], sd[pre + "output.dense.bias"])
        z2 = f_out + a1
        h_out, m2 = _layernorm(
            z2, sd[pre + "output.LayerNorm.weight"], sd[pre + "output.LayerNorm.bias"], cfg.layer_norm_eps
        )
        layers.append(
            dict(
                prm=prm,
                h_in=h,
                att=att,
                o=o,
                z1=z1,
                m1=m1,
                a1=a1,
                f_pre=f_pre,
                f_act=f_act,
                f_out=f_out,
                z2=z2,
                m2=m2,
                h_out=h_out,
                pre=pre,
            )
        )
        h = h_out
    first = h[0]
    pool_pre = _linear(first, sd["bert.pooler.dense.weight"], sd["bert.pooler.dense.bias"])
    pooled = torch.tanh(pool_pre)
    logits = _linear(pooled, sd["classifier.weight"], sd["classifier.bias"])
    return dict(
        sd=sd,
        word=word,
        tok=tok,
        pos=pos,
        e=e,
        m_emb=m,
        emb=layers[0]["h_in"] if layers else h,
        layers=layers,
        h_final=h,
        pool_pre=pool_pre,
        pooled=pooled,
        logits=logits,
    )


def bert_relevance(model, input_ids, target, variant="attnlrp", token_type_ids=None, eps=1e-12, details=False) -> dict:
    """AttnLRP / CP-LRP for ``BertForSequenceClassification`` logit ``target``.

    Returns ``{"logit", "word", "position", "token_type"}``: the target logit and, per token (T,), the
    relevance arriving at each embedding vector summed over the hidden dimension. With ``details=True``
    also ``"softmax_absorbed"`` (relevance the softmax Taylor rule did not pass on, summed over all
    layers/heads) and ``"layer_input"`` (list of (T, D) relevance at each encoder layer's input)."""
    _check_variant(variant)
    f = bert_forward(model, input_ids, token_type_ids)
    sd = f["sd"]
    logits = f["logits"]
    r_logits = torch.zeros_like(logits)
    r_logits[target] = logits[target]
    r_pooled = _linear_rel(f["pooled"], sd["classifier.weight"], logits, r_logits, eps)
    r_pool_pre = r_pooled  # tanh: identity
    r_first = _linear_rel(f["h_final"][0], sd["bert.pooler.dense.weight"], f["pool_pre"], r_pool_pre, eps)
    r_h = torch.zeros_like(f["h_final"])
    r_h[0] = r_first
    absorbed = torch.zeros((), dtype=DTYPE)
    layer_input = []
    for lay in reversed(f["layers"]):
        pre = lay["pre"]
        r_z2 = _affine_rel(lay["z2"], lay["m2"], lay["h_out"], r_h, eps)
        r_f_out, r_a1 = _sum_rel([lay["f_out"], lay["a1"]], r_z2, eps)
        r_f_act = _linear_rel(lay["f_act"], sd[pre + "output.dense.weight"], lay["f_out"], r_f_out, eps)
        r_f_pre = r_f_act  # GELU: identity
        r_a1 = r_a1 + _linear_rel(lay["a1"], sd[pre + "intermediate.dense.weight"], lay["f_pre"], r_f_pre, eps)
        r_z1 = _affine_rel(lay["z1"], lay["m1"], lay["a1"], r_a1, eps)
        r_o, r_h_res = _sum_rel([lay["o"], lay["h_in"]], r_z1, eps)
        r_h_att, ab = _attention_rel(lay["att"], lay["prm"], r_o, variant, eps)
        absorbed = absorbed + ab
        r_h = r_h_res + r_h_att
        layer_input.insert(0, r_h)
    r_e = _affine_rel(f["e"], f["m_emb"], f["emb"], r_h, eps)
    r_word, r_tok, r_pos = _sum_rel([f["word"], f["tok"], f["pos"]], r_e, eps)
    res = {"logit": logits[target], "word": r_word.sum(-1), "position": r_pos.sum(-1), "token_type": r_tok.sum(-1)}
    if details:
        res.update(softmax_absorbed=absorbed, layer_input=layer_input)
    return res


# ----------------------------------------------------------------------------------------------
# LLaMA
# ----------------------------------------------------------------------------------------------


def llama_forward(model, input_ids, hf_precision=True) -> dict:
    """Re-implemented LlamaForCausalLM forward; returns every activation (batch of 1)."""
    cfg = model.config
    sd = _params(model)
    ids = input_ids.reshape(-1)
    t = ids.shape[0]
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    rope = _rope_tables(cfg, torch.arange(t), dh, hf_precision)
    act = _act(cfg.hidden_act)
    h = sd["model.embed_tokens.weight"][ids]
    emb = h
    layers = []
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}."
        prm = {}
        for name, key in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "o_proj")):
            prm[name + "_w"] = sd[pre + f"self_attn.{key}.weight"]
            prm[name + "_b"] = sd.get(pre + f"self_attn.{key}.bias")
        xn1 = _rmsnorm(h, sd[pre + "input_layernorm.weight"], cfg.rms_norm_eps, hf_precision)
        o, att = _attention_forward(xn1, prm, n_heads, n_kv, dh, rope, causal=True, softmax_fp32=hf_precision)
        h_mid = h + o
        xn2 = _rmsnorm(h_mid, sd[pre + "post_attention_layernorm.weight"], cfg.rms_norm_eps, hf_precision)
        g = _linear(xn2, sd[pre + "mlp.gate_proj.weight"], sd.get(pre + "mlp.gate_proj.bias"))
        ga = act(g)
        u = _linear(xn2, sd[pre + "mlp.up_proj.weight"], sd.get(pre + "mlp.up_proj.bias"))
        mm = ga * u
        d = _linear(mm, sd[pre + "mlp.down_proj.weight"], sd.get(pre + "mlp.down_proj.bias"))
        h_out = h_mid + d
        layers.append(
            dict(
                prm=prm,
                h_in=h,
                xn1=xn1,
                att=att,
                o=o,
                h_mid=h_mid,
                xn2=xn2,
                g=g,
                ga=ga,
                u=u,
                mm=mm,
                d=d,
                h_out=h_out,
                pre=pre,
            )
        )
        h = h_out
    hn = _rmsnorm(h, sd["model.norm.weight"], cfg.rms_norm_eps, hf_precision)
    lm_w = sd.get("lm_head.weight", sd["model.embed_tokens.weight"])
    logits = _linear(hn, lm_w, sd.get("lm_head.bias"))
    return dict(sd=sd, emb=emb, layers=layers, h_final=h, hn=hn, lm_w=lm_w, logits=logits)


def llama_relevance(
    model, input_ids, target_token, variant="attnlrp", eps=1e-12, hf_precision=True, details=False
) -> dict:
    """AttnLRP / CP-LRP for the next-token logit of ``target_token`` at the last position of a
    ``LlamaForCausalLM``. Returns ``{"logit", "word"}`` (word: (T,) relevance of the token embeddings
    summed over the hidden dimension); ``details=True`` adds ``"softmax_absorbed"`` and ``"layer_input"``
    as in :func:`bert_relevance`."""
    _check_variant(variant)
    f = llama_forward(model, input_ids, hf_precision)
    sd = f["sd"]
    logits = f["logits"]
    r_logits = torch.zeros_like(logits)
    r_logits[-1, target_token] = logits[-1, target_token]
    r_hn = _linear_rel(f["hn"], f["lm_w"], logits, r_logits, eps)
    r_h = r_hn  # final RMSNorm: identity
    absorbed = torch.zeros((), dtype=DTYPE)
    layer_input = []
    for lay in reversed(f["layers"]):
        pre = lay["pre"]
        r_mid, r_d = _sum_rel([lay["h_mid"], lay["d"]], r_h, eps)
        r_mm = _linear_rel(lay["mm"], sd[pre + "mlp.down_proj.weight"], lay["d"], r_d, eps)
        if variant == "attnlrp":  # uniform rule on act(gate) * up
            r_ga, r_u = 0.5 * r_mm, 0.5 * r_mm
        else:  # CP-LRP: the gate is a constant
            r_ga, r_u = torch.zeros_like(r_mm), r_mm
        r_g = r_ga  # SiLU: identity
        r_xn2 = _linear_rel(lay["xn2"], sd[pre + "mlp.gate_proj.weight"], lay["g"], r_g, eps)
        r_xn2 = r_xn2 + _linear_rel(lay["xn2"], sd[pre + "mlp.up_proj.weight"], lay["u"], r_u, eps)
        r_mid = r_mid + r_xn2  # post-attention RMSNorm: identity
        r_in, r_o = _sum_rel([lay["h_in"], lay["o"]], r_mid, eps)
        r_xn1, ab = _attention_rel(lay["att"], lay["prm"], r_o, variant, eps)
        absorbed = absorbed + ab
        r_h = r_in + r_xn1  # input RMSNorm: identity
        layer_input.insert(0, r_h)
    res = {"logit": logits[-1, target_token], "word": r_h.sum(-1)}
    if details:
        res.update(softmax_absorbed=absorbed, layer_input=layer_input)
    return res


# ----------------------------------------------------------------------------------------------
# tiny models
# ----------------------------------------------------------------------------------------------


def _randomise(model, seed, weight_std, zero_biases=False):
    """Seeded random weights: matrices/embeddings N(0, weight_std^2), norm weights 1 + N(0, 0.2^2),
    biases (Linear and LayerNorm) N(0, 0.3^2), or 0 with ``zero_biases``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=DTYPE)
            low = name.lower()
            if name.endswith("bias"):
                p.copy_(torch.zeros_like(noise) if zero_biases else 0.3 * noise)
            elif "norm" in low and p.dim() == 1:
                p.copy_(1.0 + 0.2 * noise)
            elif "embed" in low:
                p.copy_(0.5 * noise)
            else:
                p.copy_(weight_std * noise)
    return model


def tiny_bert(seed=0, weight_std=0.3, zero_biases=False, **overrides):
    """float64 eval ``BertForSequenceClassification``: vocab 100, hidden 32, 2 layers, 4 heads,
    intermediate 64, max_position 64, type_vocab 2, 3 labels, GELU, eager attention."""
    from transformers import BertConfig, BertForSequenceClassification

    kw = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        num_labels=3,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    kw.update(overrides)
    model = BertForSequenceClassification(BertConfig(**kw)).to(DTYPE).eval()
    model.set_attn_implementation("eager")
    return _randomise(model, seed, weight_std, zero_biases)


def tiny_llama(seed=0, weight_std=0.3, **overrides):
    """float64 eval ``LlamaForCausalLM``: vocab 100, hidden 32, 2 layers, 4 heads, 2 kv heads, intermediate 64,
    max_position 64, SiLU, untied lm_head, no biases, eager attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_act="silu",
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        attn_implementation="eager",
    )
    kw.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**kw)).to(DTYPE).eval()
    model.set_attn_implementation("eager")
    return _randomise(model, seed, weight_std)
