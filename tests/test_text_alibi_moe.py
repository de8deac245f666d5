"""ALiBi attention (Bloom, MPT, a DNABERT-2-like encoder) and mixture-of-experts layers (Mixtral,
Qwen3-MoE, OLMoE, DeepSeek-V3) under AttnLRP and CP-LRP: strict coverage, identical outputs, the
model restored (also after an error), conservation on bias-free models, and Bloom against an
independent float64 re-implementation of the rules."""

import math
import warnings

import pytest
import torch
from torch import nn

import lrp_domains as L
import lrp_domains.text  # noqa: F401  (registers the composites)

tf = pytest.importorskip("transformers")

VARIANTS = ("attnlrp", "cp-lrp")
COMMON = dict(
    vocab_size=100,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    initializer_range=0.2,
)
MOE = ("mixtral", "qwen3_moe", "olmoe", "deepseek_v3")
ALIBI = ("bloom", "mpt")


def build(arch: str, dtype=torch.float64, experts: str = "eager", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if arch == "bloom":
        model = tf.BloomForCausalLM(tf.BloomConfig(vocab_size=100, hidden_size=32, n_layer=2, n_head=4))
    elif arch == "mpt":
        model = tf.MptForCausalLM(tf.MptConfig(vocab_size=100, d_model=32, n_layers=2, n_heads=4, max_seq_len=64))
    elif arch == "mixtral":
        model = tf.MixtralForCausalLM(tf.MixtralConfig(**COMMON, num_local_experts=4, num_experts_per_tok=2))
    elif arch == "qwen3_moe":
        model = tf.Qwen3MoeForCausalLM(
            tf.Qwen3MoeConfig(**COMMON, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, head_dim=8)
        )
    elif arch == "olmoe":
        model = tf.OlmoeForCausalLM(tf.OlmoeConfig(**COMMON, num_experts=4, num_experts_per_tok=2, eos_token_id=1))
    elif arch == "deepseek_v3":
        model = tf.DeepseekV3ForCausalLM(
            tf.DeepseekV3Config(
                **{**COMMON, "num_key_value_heads": 4},
                n_routed_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=16,
                n_group=2,
                topk_group=1,
                first_k_dense_replace=1,
                q_lora_rank=16,
                kv_lora_rank=16,
                qk_rope_head_dim=4,
                qk_nope_head_dim=4,
                v_head_dim=8,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            )
        )
    else:
        raise ValueError(arch)
    if hasattr(model.config, "_experts_implementation"):
        model.config._experts_implementation = experts
    return model.to(dtype).eval()


def _ids(seed=0, batch=2, length=9):
    return torch.randint(3, 100, (batch, length), generator=torch.Generator().manual_seed(seed))


def _explain(model, ids, variant, epsilon=0.0, target=7):
    result = L.explain(
        model,
        {"input_ids": ids},
        target=lambda out: out[:, -1, target],
        composite=L.composites.get(variant, epsilon=epsilon),
        strict=True,
        sources=nn.Embedding,
        check_delta=False,
    )
    total = sum(value.sum((-1, -2)) for value in result.sources.values())
    return result, total


def _zero_biases(model):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") and "e_score_correction" not in name:
                param.zero_()
    return model


def _restored(model):
    assert not any("forward" in vars(m) for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ALIBI + MOE)
def test_strict_coverage_identical_outputs_and_restored(arch, variant):
    model = build(arch)
    ids = _ids()
    before = model(input_ids=ids).logits
    result, total = _explain(model, ids, variant)
    assert torch.equal(result.output, before)
    assert torch.isfinite(total).all() and bool((total != 0).all())
    _restored(model)
    assert torch.equal(model(input_ids=ids).logits, before)


@pytest.mark.parametrize("arch", ALIBI + MOE)
def test_cp_lrp_conserves_on_bias_free_models(arch):
    """ALiBi's bias and the routing weights are constants: with no other bias, CP-LRP's relevance
    sums to the explained logit (float64, 1e-5 relative)."""
    model = _zero_biases(build(arch))
    result, total = _explain(model, _ids(), "cp-lrp", epsilon=1e-12)
    torch.testing.assert_close(total, result.explained, rtol=1e-5, atol=0)


@pytest.mark.parametrize("arch", ("mixtral", "qwen3_moe", "olmoe"))
def test_expert_implementations_give_the_same_relevance(arch):
    """Looped (eager), batched (bmm) and grouped (torch._grouped_mm, float32 only on CPU) experts: the
    same relevance, all covered in strict mode."""
    ids = _ids()
    eager = {v: _explain(build(arch), ids, v)[0] for v in VARIANTS}
    for variant in VARIANTS:
        batched, _ = _explain(build(arch, experts="batched_mm"), ids, variant)
        for name, value in eager[variant].sources.items():
            torch.testing.assert_close(batched.sources[name], value, rtol=1e-9, atol=1e-12)
        grouped_model = build(arch, dtype=torch.float32, experts="grouped_mm")
        before = grouped_model(input_ids=ids).logits
        grouped, _ = _explain(grouped_model, ids, variant)
        assert torch.equal(grouped.output, before)
        for name, value in eager[variant].sources.items():
            expected = value.float()
            torch.testing.assert_close(grouped.sources[name], expected, rtol=0, atol=2e-4 * float(expected.abs().max()))


def test_routing_weights_are_constants():
    """Under AttnLRP the router's softmax would otherwise pass its gradient: explaining with the
    router's outputs frozen by hand gives the same relevance."""
    model = build("mixtral")
    ids = _ids()
    reference, _ = _explain(model, ids, "attnlrp")
    routers = [m.mlp.gate for m in model.model.layers]

    def freeze(module, args, output):
        return tuple(o.detach() for o in output)

    handles = [r.register_forward_hook(freeze) for r in routers]
    composite = L.composites.get("attnlrp")
    composite.rules = {k: v for k, v in composite.rules.items() if type(v).__name__ != "RouterRule"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the router's own ops, now without a rule, off the explained path
            frozen = L.explain(
                model,
                {"input_ids": ids},
                target=lambda out: out[:, -1, 7],
                composite=composite,
                sources=nn.Embedding,
                check_delta=False,
            )
    finally:
        for handle in handles:
            handle.remove()
    for name, value in reference.sources.items():
        torch.testing.assert_close(frozen.sources[name], value)


@pytest.mark.parametrize("arch", ("bloom", "mixtral"))
def test_model_restored_after_an_error(arch):
    model = build(arch)
    with pytest.raises(IndexError):
        with L.composites.get("cp-lrp").context(model):
            model(input_ids=torch.tensor([[5, 400]]))
    _restored(model)


# -- Bloom against an independent float64 re-implementation --------------------------------------


def _scaled(t: torch.Tensor, factor: float) -> torch.Tensor:
    """``t`` with its gradient scaled by ``factor`` (value unchanged)."""
    return t * factor + (t - t * factor).detach()


def _identity(x: torch.Tensor, fn) -> torch.Tensor:
    """``fn(x)`` with the identity rule's gradient ``fn(x) / x``."""
    return x * (fn(x) / x).detach()


def _layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    std = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps).detach()
    return (x - mean) / std * weight + bias


def bloom_reference(model, ids, target, variant):
    """Bloom's forward written out in float64 with each rule as a detach trick (no lrp_domains):
    LayerNorm std constant, GELU identity rule, ALiBi + causal mask constants, ``q k^T`` and ``A V``
    uniform (AttnLRP: softmax by its gradient; CP-LRP: probabilities constant), linear layers LRP-0.
    Returns the logit and the token relevance."""
    p = {k: v.detach() for k, v in model.state_dict().items()}
    c = model.config
    heads, width = c.n_head, c.hidden_size
    d = width // heads
    n, length = ids.shape
    embeds = p["transformer.word_embeddings.weight"][ids].clone().requires_grad_(True)
    h = _layer_norm(
        embeds,
        p["transformer.word_embeddings_layernorm.weight"],
        p["transformer.word_embeddings_layernorm.bias"],
        c.layer_norm_epsilon,
    )
    slopes = torch.tensor([2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)], dtype=torch.float64)
    alibi = slopes[:, None, None] * torch.arange(length, dtype=torch.float64)[None, None, :]  # (H, 1, T)
    causal = torch.full((length, length), torch.finfo(torch.float64).min, dtype=torch.float64).triu(1)
    for i in range(c.n_layer):
        q = f"transformer.h.{i}."
        x = _layer_norm(h, p[q + "input_layernorm.weight"], p[q + "input_layernorm.bias"], c.layer_norm_epsilon)
        qkv = x @ p[q + "self_attention.query_key_value.weight"].T + p[q + "self_attention.query_key_value.bias"]
        qkv = qkv.view(n, length, heads, 3, d)
        query, key, value = (qkv[..., j, :].transpose(1, 2) for j in range(3))  # (N, H, T, d)
        if variant == "attnlrp":
            query, key = _scaled(query, 0.5), _scaled(key, 0.5)
        else:
            query, key = query.detach(), key.detach()
        scores = alibi + (query @ key.transpose(-1, -2)) / math.sqrt(d) + causal
        probs = torch.softmax(scores, -1, dtype=torch.float32).to(torch.float64)  # as Bloom
        if variant == "attnlrp":
            probs, value = _scaled(probs, 0.5), _scaled(value, 0.5)
        context = (probs @ value).transpose(1, 2).reshape(n, length, width)
        h = h + context @ p[q + "self_attention.dense.weight"].T + p[q + "self_attention.dense.bias"]
        x = _layer_norm(
            h, p[q + "post_attention_layernorm.weight"], p[q + "post_attention_layernorm.bias"], c.layer_norm_epsilon
        )
        up = x @ p[q + "mlp.dense_h_to_4h.weight"].T + p[q + "mlp.dense_h_to_4h.bias"]
        act = _identity(up, lambda t: nn.functional.gelu(t, approximate="tanh"))
        h = h + act @ p[q + "mlp.dense_4h_to_h.weight"].T + p[q + "mlp.dense_4h_to_h.bias"]
    h = _layer_norm(h, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], c.layer_norm_epsilon)
    logit = (h @ p["transformer.word_embeddings.weight"].T)[:, -1, target]
    logit.sum().backward()
    return logit.detach(), (embeds * embeds.grad).sum(-1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bloom_matches_an_independent_reference(variant):
    model = build("bloom", seed=3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.dim() == 2:
                param.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    ids = _ids(seed=4, batch=2, length=8)
    logit, expected = bloom_reference(model, ids, 11, variant)
    result, _ = _explain(model, ids, variant, target=11)
    torch.testing.assert_close(result.explained, logit, rtol=1e-8, atol=0)  # softmax in float32, as Bloom
    (relevance,) = (value.sum(-1) for value in result.sources.values())
    torch.testing.assert_close(relevance, expected, rtol=0, atol=1e-9 * float(expected.abs().max()))


# -- a DNABERT-2-like encoder (ALiBi, GLU) through the dna-lm kind -------------------------------


def _alibi_encoder(zero_biases=False):
    from lrp_domains.bench.data.alibi_encoder import AlibiEncoderForSequenceClassification, alibi_config
    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(3)
    torch.manual_seed(5)
    model = AlibiEncoderForSequenceClassification(alibi_config(tokenizer, hidden_size=32, heads=4)).double().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(name)))
            elif name.endswith("bias"):
                param.normal_(0, 0.0 if zero_biases else 0.1, generator=torch.Generator().manual_seed(len(name)))
    return model, tokenizer


SEQUENCES = ["ACGTTGCAAGGCTTAACGGATCC", "TTGACCAGTA", "GGGCATNACGTACGTAGCT"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_alibi_encoder_through_dna_lm(variant):
    from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer

    model, tokenizer = _alibi_encoder()
    batch = dict(tokenizer(SEQUENCES, padding=True, return_tensors="pt", return_token_type_ids=False))
    before = model(**batch).logits
    explanation = TokenSequenceExplainer(model, tokenizer, composite=variant, strict=True).explain(SEQUENCES, target=1)
    assert torch.equal(model(**batch).logits, before)
    _restored(model)
    assert explanation.relevance.shape == (3, 4, max(len(s) for s in SEQUENCES))
    assert torch.isfinite(explanation.relevance).all() and explanation.relevance.abs().sum() > 0
    # Padding-independent: each sequence alone gives the same relevance.
    alone = TokenSequenceExplainer(model, tokenizer, composite=variant, strict=True).explain(SEQUENCES[1], target=1)
    width = len(SEQUENCES[1])
    torch.testing.assert_close(explanation.relevance[1, :, :width], alone.relevance[0], rtol=1e-7, atol=1e-12)


def test_alibi_encoder_conserves_without_biases_under_cp_lrp():
    from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer

    model, tokenizer = _alibi_encoder(zero_biases=True)
    composite = L.composites.get("cp-lrp", epsilon=1e-12)
    explanation = TokenSequenceExplainer(model, tokenizer, composite=composite, strict=True).explain(
        SEQUENCES, target=1
    )
    total = explanation.channel_relevance.sum((1, 2)) + explanation.special_relevance + explanation.other_relevance
    torch.testing.assert_close(total, explanation.explained.double(), rtol=1e-5, atol=0)
