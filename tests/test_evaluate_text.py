"""Token attributions for the text faithfulness benchmark, on a tiny BERT."""

import pytest
import text_models as T
import torch

from lrp_domains.evaluate import curve, removal_masks
from lrp_domains.evaluate import text as E
from lrp_domains.text import TextExplainer

TEXTS = T.SENTENCES[:5]


@pytest.fixture(scope="module")
def setup():
    model = T.encoder("bert", num_labels=2)
    tokenizer = T.wordpiece_tokenizer()
    encoded = E.encode(tokenizer, TEXTS)
    target = E.predict(model, encoded).argmax(1)
    return model, tokenizer, encoded, target


def test_lrp_tokens_equal_the_explainers(setup):
    model, tokenizer, encoded, target = setup
    explainer = TextExplainer(model, tokenizer)
    relevance = E.lrp(explainer, encoded, target, batch_size=2)
    results = explainer.explain(TEXTS, target=target.tolist())
    for i, result in enumerate(results):
        n = len(result.tokens)
        torch.testing.assert_close(relevance[i, :n], result.token_relevance)
        assert bool((relevance[i, n:] == 0).all())


def test_gradient_x_input_by_hand(setup):
    model, _, encoded, target = setup
    relevance = E.gradient_x_input(model, encoded, target, batch_size=5)
    i = 2
    n = int(encoded.attention_mask[i].sum())
    ids = encoded.input_ids[i : i + 1, :n]
    words = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logit = model(inputs_embeds=words, token_type_ids=encoded.token_type_ids[i : i + 1, :n]).logits[0, target[i]]
    (grad,) = torch.autograd.grad(logit, words)
    torch.testing.assert_close(relevance[i, :n], (words * grad).sum(-1)[0].detach())


def test_integrated_gradients_are_complete_against_a_zero_embedding(setup):
    model, _, encoded, target = setup
    relevance = E.integrated_gradients(model, encoded, target, steps=64, batch_size=5)
    rows = encoded.rows(0, 5)
    with torch.no_grad():
        words = model.get_input_embeddings()(rows.input_ids)
        full = model(inputs_embeds=words, attention_mask=rows.attention_mask, token_type_ids=rows.token_type_ids)
        empty = model(
            inputs_embeds=torch.zeros_like(words),
            attention_mask=rows.attention_mask,
            token_type_ids=rows.token_type_ids,
        )
    difference = (full.logits - empty.logits).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(relevance.sum(1), difference.double(), rtol=2e-3, atol=1e-4)


def test_rollout_rows_are_distributions_and_eager_is_restored(setup):
    model, _, encoded, _ = setup
    implementation = model.config._attn_implementation
    relevance = E.attention_rollout(model, encoded, batch_size=2)
    torch.testing.assert_close(relevance.sum(1), torch.ones(len(TEXTS), dtype=torch.float64))
    assert bool((relevance[~encoded.attention_mask.bool()] == 0).all())
    assert model.config._attn_implementation == implementation


def test_token_curves_never_touch_special_tokens_or_padding(setup):
    model, tokenizer, encoded, target = setup
    relevance = E.random_tokens(encoded)
    replace = E.replace_tokens(encoded, tokenizer.unk_token_id)
    valid, protected = encoded.attention_mask.bool(), encoded.special
    for fraction in (0.0, 0.5, 1.0):
        removed = removal_masks(relevance, fraction, valid=valid, protected=protected)
        ids = replace(encoded.input_ids, removed)
        assert torch.equal(ids[protected | ~valid], encoded.input_ids[protected | ~valid])
    everything = removal_masks(relevance, 1.0, valid=valid, protected=protected)
    assert bool((everything == (valid & ~protected)).all())
    logits = curve(
        lambda ids: E.predict(model, encoded, ids),
        encoded.input_ids,
        relevance,
        replace,
        valid=valid,
        protected=protected,
        fractions=(0.0, 1.0),
    )
    torch.testing.assert_close(logits[:, 0], E.predict(model, encoded))


def _old_embedding_attributions(model, encoded, target, steps, batch_size):
    """The text baselines as they were written before they were calls of the tensor baselines:
    ``inputs_embeds`` scaled by hand, the gradient of the target logit."""

    def grad_at(words, inputs, chosen, scale):
        leaf = (words * scale).detach().requires_grad_(True)
        logits = model(inputs_embeds=leaf, **inputs).logits
        return torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), leaf)[0]

    parts = {"gxi": [], "ig": []}
    width = encoded.input_ids.shape[1]
    with torch.enable_grad():
        for start in range(0, len(encoded), batch_size):
            rows = encoded.rows(start, min(start + batch_size, len(encoded)))
            inputs = rows.model_inputs(torch.device("cpu"))
            ids = inputs.pop("input_ids")
            chosen = target[start : start + len(rows)]
            with torch.no_grad():
                words = model.get_input_embeddings()(ids)
            pad = (0, width - ids.shape[1])
            parts["gxi"].append(torch.nn.functional.pad((words * grad_at(words, inputs, chosen, 1.0)).sum(-1), pad))
            total = 0.0
            for k in range(steps):
                total = total + grad_at(words, inputs, chosen, (k + 0.5) / steps)
            parts["ig"].append(torch.nn.functional.pad((words * total / steps).sum(-1), pad))
    return {key: torch.cat(value).detach().double() for key, value in parts.items()}


def test_text_baselines_are_the_tensor_baselines_on_the_word_embeddings(setup):
    import inspect

    from lrp_domains import evaluate as baselines

    model, _, encoded, target = setup
    old = _old_embedding_attributions(model.eval(), encoded, target, steps=6, batch_size=2)
    gxi = E.gradient_x_input(model, encoded, target, batch_size=2)
    ig = E.integrated_gradients(model, encoded, target, steps=6, batch_size=2)
    assert torch.equal(gxi, old["gxi"])  # the same operations: the same numbers
    assert torch.equal(ig, old["ig"])
    # each caller keeps its number of steps: 25 for texts (the text benchmark's), 32 for tensors
    assert inspect.signature(E.integrated_gradients).parameters["steps"].default == 25
    assert inspect.signature(baselines.integrated_gradients).parameters["steps"].default == 32
    # the same numbers as the tensor baselines with the word embedding as the source
    rows = encoded.rows(0, 2)
    word = "bert.embeddings.word_embeddings"
    shared = baselines.integrated_gradients(
        model, rows.model_inputs(torch.device("cpu")), target[:2], steps=6, sources=[word]
    )
    width = rows.input_ids.shape[1]
    torch.testing.assert_close(shared.sources[word].sum(-1).double(), ig[:2, :width])
