"""AttnLRP and CP-LRP as modified gradients equal the explicit-relevance reference
(tests/text_reference.py: relevance passed layer by layer with each rule's formula), float64."""

import pytest
import torch
from text_reference import bert_relevance, llama_relevance, tiny_bert, tiny_llama
from torch import nn

import lrp_domains as L
import lrp_domains.text  # noqa: F401

VARIANTS = ("attnlrp", "cp-lrp")


def _ours(model, ids, explained_fn, variant, **inputs):
    result = L.explain(
        model,
        {"input_ids": ids, **inputs},
        target=lambda out: explained_fn(out).reshape(1),
        composite=L.composites.get(variant, epsilon=1e-12),
        strict=True,
        sources=nn.Embedding,
        check_delta=False,
    )
    return result.explained[0], {n: value.sum(-1)[0] for n, value in result.sources.items()}


def _close(ours, expected):
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("seed", [0, 1])
def test_bert_matches_the_explicit_reference(variant, seed):
    model = tiny_bert(seed=seed)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (1, 10), generator=g)
    types = torch.cat([torch.zeros(1, 6, dtype=torch.long), torch.ones(1, 4, dtype=torch.long)], 1)
    target = seed % 3
    expected = bert_relevance(model, ids, target, variant=variant, token_type_ids=types)
    logit, ours = _ours(model, ids, lambda out: out[0, target], variant, token_type_ids=types)
    torch.testing.assert_close(logit, expected["logit"])
    _close(ours["bert.embeddings.word_embeddings"], expected["word"])
    _close(ours["bert.embeddings.position_embeddings"], expected["position"])
    _close(ours["bert.embeddings.token_type_embeddings"], expected["token_type"])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("seed", "kv_heads"), [(0, 2), (1, 4), (2, 1)])
def test_llama_matches_the_explicit_reference(variant, seed, kv_heads):
    model = tiny_llama(seed=seed, num_key_value_heads=kv_heads)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (1, 11), generator=g)
    token = int(torch.randint(0, 100, (1,), generator=g))
    expected = llama_relevance(model, ids, token, variant=variant)
    logit, ours = _ours(model, ids, lambda out: out[0, -1, token], variant)
    torch.testing.assert_close(logit, expected["logit"])
    _close(ours["model.embed_tokens"], expected["word"])
