"""State-space models under AttnLRP and CP-LRP (MambaLRP's rules, lrp_domains.text.state_space):
transformers' Mamba, Mamba-2 and the Bamba and Jamba hybrids on the CPU ("slow") torch path, a
Caduceus-like two-strand DNA model through the dna-lm kind; MambaLRP's own relevance on a tiny
Mamba (tests/data/reference)."""

import json

import pytest
import torch
from conftest import REFERENCE_DIR
from safetensors.torch import load_file
from torch import nn

import lrp_domains as L
import lrp_domains.text  # noqa: F401  (registers the composites)
from lrp_domains.text import state_space

tf = pytest.importorskip("transformers")

VARIANTS = ("attnlrp", "cp-lrp")
ARCHS = ("mamba", "mamba2", "bamba", "jamba")


def build(arch: str, seed: int = 0, bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    if arch == "mamba":
        config = tf.MambaConfig(
            vocab_size=100,
            hidden_size=32,
            state_size=8,
            num_hidden_layers=2,
            expand=2,
            conv_kernel=4,
            residual_in_fp32=False,
            use_conv_bias=bias,
        )
        model = tf.MambaForCausalLM(config)
    elif arch == "mamba2":
        config = tf.Mamba2Config(
            vocab_size=100,
            hidden_size=32,
            state_size=8,
            num_hidden_layers=2,
            expand=2,
            num_heads=8,
            head_dim=8,
            n_groups=2,
            conv_kernel=4,
            chunk_size=4,
            residual_in_fp32=False,
            use_conv_bias=bias,
        )
        model = tf.Mamba2ForCausalLM(config)
    elif arch == "bamba":
        config = tf.BambaConfig(
            vocab_size=100,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            mamba_n_heads=8,
            mamba_d_head=8,
            mamba_n_groups=1,
            mamba_d_state=8,
            mamba_chunk_size=4,
            attn_layer_indices=[1],
            mamba_conv_bias=bias,
        )
        model = tf.BambaForCausalLM(config)
    elif arch == "jamba":
        config = tf.JambaConfig(
            vocab_size=100,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            mamba_d_state=8,
            mamba_expand=2,
            mamba_dt_rank=4,
            mamba_conv_bias=bias,
            num_experts=2,
            num_experts_per_tok=1,
            attn_layer_period=2,
            attn_layer_offset=1,
            expert_layer_period=2,
            expert_layer_offset=1,
        )
        model = tf.JambaForCausalLM(config)
        model.config._experts_implementation = "eager"
    else:
        raise ValueError(arch)
    with torch.no_grad():  # weights large enough that the rules' differences show
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "A_log" not in name:
                param.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed + len(name)))
            elif name.endswith("bias") and not bias and "dt" not in name:
                param.zero_()
    return model.double().eval()


def _ids(seed=0, batch=2, length=10):
    return torch.randint(3, 100, (batch, length), generator=torch.Generator().manual_seed(seed))


def _explain(model, ids, variant, epsilon=0.0, target=7, strict=True):
    result = L.explain(
        model,
        {"input_ids": ids},
        target=lambda out: out[:, -1, target],
        composite=L.composites.get(variant, epsilon=epsilon),
        strict=strict,
        sources=nn.Embedding,
        check_delta=False,
    )
    return result, sum(value.sum((-1, -2)) for value in result.sources.values())


def _restored(model):
    assert not any("forward" in vars(m) for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert not state_space._mixers()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_strict_coverage_identical_outputs_and_restored(arch, variant):
    model = build(arch)
    ids = _ids()
    before = model(input_ids=ids).logits
    result, total = _explain(model, ids, variant)
    assert torch.equal(result.output, before)
    assert torch.isfinite(total).all() and bool((total != 0).all())
    _restored(model)
    assert torch.equal(model(input_ids=ids).logits, before)


# Bamba's and Jamba's attention layers do not conserve under AttnLRP (the softmax's gradient): CP-LRP only.
CONSERVING = [(a, v) for a in ARCHS for v in VARIANTS if v == "cp-lrp" or a in ("mamba", "mamba2")]


@pytest.mark.parametrize(("arch", "variant"), CONSERVING)
def test_conserves_on_bias_free_models(arch, variant):
    """dt, B and C constant, the gate by the half rule (AttnLRP) or constant (CP-LRP), norms' statistics
    constant: without biases (the time step's bias only sets the constant discretisation) the relevance
    sums to the logit."""
    model = build(arch, bias=False)
    result, total = _explain(model, _ids(), variant, epsilon=1e-12)
    torch.testing.assert_close(total, result.explained.double(), rtol=1e-5, atol=0)  # logits come as float32


def test_the_selection_is_constant_and_the_scan_linear():
    """With dt, B, C held constant the mixer is linear in its input: the relevance of a Mamba layer's
    input equals ``x * g`` with ``g`` the gradient of the scan with the selection frozen by hand."""
    model = build("mamba", bias=False)
    mixer = model.backbone.layers[0].mixer
    x = torch.randn(1, 6, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    composite = L.composites.get("cp-lrp")
    with composite.context(mixer):
        leaf = x.clone().requires_grad_(True)
        out = mixer(leaf)
        (grad,) = torch.autograd.grad(out[0, -1, 3], leaf)
    relevance = (x * grad).sum()
    torch.testing.assert_close(relevance, out[0, -1, 3].detach(), rtol=1e-6, atol=0)
    assert not state_space._mixers()


@pytest.mark.parametrize("arch", ("mamba", "mamba2"))
def test_model_restored_after_an_error(arch):
    model = build(arch)
    with pytest.raises(IndexError):
        with L.composites.get("attnlrp").context(model):
            model(input_ids=torch.tensor([[5, 400]]))
    _restored(model)


def test_matches_mambalrp_on_a_tiny_mamba():
    """MambaLRP (FarnoushRJ/MambaLRP b4462a5, its ModifiedMambaForCausalLM on the torch path, run in its
    own process; tests/data/reference/README.md) is AttnLRP's choice for every part: SiLU identity, dt/B/C
    constant, the gate halved, RMSNorm's statistic constant, linear layers LRP-0. Agreement within 1e-5 of
    the largest relevance (MambaLRP stabilises its identity rule's ratio with 1e-6; RMSNorm runs in
    float32 in both)."""
    meta = json.loads((REFERENCE_DIR / "mambalrp_mamba.json").read_text())
    model = tf.MambaForCausalLM(tf.MambaConfig(**meta["config"])).double().eval()
    missing, unexpected = model.load_state_dict(load_file(REFERENCE_DIR / meta["weights"]), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to the embeddings
    reference = load_file(REFERENCE_DIR / "mambalrp_mamba.safetensors")
    result, _ = _explain(model, reference["input_ids"], "attnlrp", target=meta["target_token"])
    (relevance,) = (value.sum(-1)[0] for value in result.sources.values())
    expected = reference["relevance"].double()
    torch.testing.assert_close(result.explained[0].reshape(1), reference["logit"], rtol=1e-7, atol=0)
    torch.testing.assert_close(relevance, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))
    # The plain gradient x input differs: the rules matter on this model.
    embeds = model.backbone.embeddings(reference["input_ids"]).detach().requires_grad_(True)
    logit = model(inputs_embeds=embeds).logits[0, -1, meta["target_token"]]
    (grad,) = torch.autograd.grad(logit, embeds)
    assert (grad * embeds).sum(-1)[0].sub(expected).abs().max() > 1e-2 * float(expected.abs().max())


# -- a Caduceus-like state-space DNA model through the dna-lm kind -------------------------------


def _caduceus(bias=True):
    from lrp_domains.bench.data.caduceus_like import CaduceusLikeForSequenceClassification, caduceus_config
    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(1)
    torch.manual_seed(2)
    model = CaduceusLikeForSequenceClassification(caduceus_config(tokenizer, hidden_size=16, state_size=4))
    if not bias:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias") and "dt_proj" not in name:
                    param.zero_()
    return model.double().eval(), tokenizer


SEQUENCES = ["ACGTTGCAAGGCTTAACGGATCC", "TTGACCAGTA", "GGGCATNACGTACGTAGCT"]


def _complement(sequence):
    return sequence.translate(str.maketrans("ACGTN", "TGCAN"))[::-1]


@pytest.mark.parametrize("variant", VARIANTS)
def test_caduceus_like_through_dna_lm(variant):
    from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer

    model, tokenizer = _caduceus()
    batch = dict(tokenizer(SEQUENCES, padding=True, return_tensors="pt", return_token_type_ids=False))
    before = model(**batch).logits
    explainer = TokenSequenceExplainer(model, tokenizer, composite=variant, strict=True)
    explanation = explainer.explain(SEQUENCES, target=1)
    assert torch.equal(model(**batch).logits, before)
    _restored(model)
    # Padding never changes a sequence's relevance.
    alone = explainer.explain(SEQUENCES[1], target=1)
    width = len(SEQUENCES[1])
    torch.testing.assert_close(explanation.relevance[1, :, :width], alone.relevance[0], rtol=1e-7, atol=1e-12)
    # Reverse-complement symmetry: the reverse complement gets the same logits and the mirrored relevance.
    mirrored = explainer.explain([_complement(s) for s in SEQUENCES], target=1)
    torch.testing.assert_close(mirrored.explained, explanation.explained)
    for row, sequence in enumerate(SEQUENCES):
        n = len(sequence)
        forward = explanation.relevance[row, :, :n].sum(0)
        backward = mirrored.relevance[row, :, :n].sum(0).flip(0)
        torch.testing.assert_close(backward, forward, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_caduceus_like_conserves_without_biases(variant):
    from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer

    model, tokenizer = _caduceus(bias=False)
    composite = L.composites.get(variant, epsilon=1e-12)
    explanation = TokenSequenceExplainer(model, tokenizer, composite=composite, strict=True).explain(
        SEQUENCES, target=1
    )
    total = explanation.channel_relevance.sum((1, 2)) + explanation.special_relevance + explanation.other_relevance
    torch.testing.assert_close(total, explanation.explained.double(), rtol=1e-5, atol=0)
