"""AttnLRP and CP-LRP give LXT's own numbers on tiny LLaMA and GPT-2 (tests/data/reference)."""

import json

import pytest
import torch
from conftest import REFERENCE_DIR
from safetensors.torch import load_file
from torch import nn

import lrp_domains as L
import lrp_domains.text  # noqa: F401  (registers the composites)

CASES = [(arch, variant) for arch in ("llama", "gpt2") for variant in ("attnlrp", "cp-lrp")]
#: How close our logit is to LXT's. transformers' LLaMA computes its RMSNorm and rotary tables in
#: float32 even in a float64 model, so its output agrees across machines to float32's precision
#: only (the CPU's float32 kernels differ: 1e-7 apart between two machines of this project); GPT-2
#: stays in float64 throughout.
LOGIT_RTOL = {"llama": 1e-6, "gpt2": 1e-10}


def _load(arch, variant):
    import transformers as tf

    meta_path = REFERENCE_DIR / f"lxt_{arch}_{variant}.json"
    meta = json.loads(meta_path.read_text())
    config_class, model_class = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel),
    }[arch]
    model = model_class(config_class(**meta["config"], attn_implementation="eager")).double().eval()
    weights = load_file(REFERENCE_DIR / meta["weights"])
    missing, unexpected = model.load_state_dict({k: v.double() for k, v in weights.items()}, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # GPT-2's head is tied to wte
    return model, meta, load_file(REFERENCE_DIR / f"lxt_{arch}_{variant}.safetensors")


def _word_relevance(model, ids, target, variant, epsilon=None):
    composite = L.composites.get(variant) if epsilon is None else L.composites.get(variant, epsilon=epsilon)
    result = L.explain(
        model,
        {"input_ids": ids},
        target=lambda out: out[:, -1, target],
        composite=composite,
        strict=True,
        sources=nn.Embedding,
        check_delta=False,
    )
    name = next(n for n in result.sources if n.endswith(("wte", "embed_tokens")))
    return result.explained[0], result.sources[name].sum(-1)[0]


@pytest.mark.parametrize(("arch", "variant"), CASES)
def test_matches_lxt(arch, variant):
    """Our default, like LXT's efficient mode, is LRP-0 (the plain gradient) on linear layers."""
    model, meta, reference = _load(arch, variant)
    logit, relevance = _word_relevance(model, reference["input_ids"], meta["target_token"], variant)
    torch.testing.assert_close(logit, reference["logit"].double().reshape(()), rtol=LOGIT_RTOL[arch], atol=0)
    expected = reference["relevance"].double()
    torch.testing.assert_close(relevance, expected, rtol=0, atol=1e-7 * expected.abs().max().item())


@pytest.mark.parametrize(("arch", "variant"), CASES)
def test_a_small_epsilon_stays_close_to_lxt(arch, variant):
    """epsilon = 1e-6 on the linear layers absorbs a little relevance in these tiny random models,
    whose activations are small: within 1e-3 of LXT's largest value."""
    model, meta, reference = _load(arch, variant)
    _, relevance = _word_relevance(model, reference["input_ids"], meta["target_token"], variant, 1e-6)
    expected = reference["relevance"].double()
    torch.testing.assert_close(relevance, expected, rtol=0, atol=1e-3 * expected.abs().max().item())


def test_cp_lrp_on_llama_conserves_like_lxt():
    model, meta, reference = _load("llama", "cp-lrp")
    logit, relevance = _word_relevance(model, reference["input_ids"], meta["target_token"], "cp-lrp")
    assert relevance.sum().item() == pytest.approx(logit.item(), rel=1e-8)
