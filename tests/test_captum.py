"""``lrp_domains.captum.LRP``: a Captum ``Attribution`` running our engine, inside Captum's own
``NoiseTunnel`` and visualisation, with embedding inputs as Captum's text users feed them, and as an
inseq method (issue #28)."""

import copy
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from models import cnn2d, mlp, seeded

pytest.importorskip("captum", reason="captum is not installed (pip install '.[peers]')")

from captum.attr import Attribution, NoiseTunnel  # noqa: E402
from captum.attr import visualization as viz  # noqa: E402

import lrp_domains as L  # noqa: E402
from lrp_domains.captum import LRP, LayerLRP  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_the_peers_extra_holds_captum_and_make_test_installs_it():
    pyproject = (ROOT / "pyproject.toml").read_text()
    peers = re.search(r"^peers = \[(.*)\]$", pyproject, re.MULTILINE)
    assert peers is not None and "captum" in peers.group(1) and "inseq" in peers.group(1)
    makefile = (ROOT / "Makefile").read_text()
    target = makefile[makefile.index("$(BIN)/.installed:") :]
    installs = re.search(r'pip install --quiet -e "\.\[(.*?)\]"', target)
    assert installs is not None and "peers" in installs.group(1).split(",")


@pytest.fixture(scope="module")
def bias_free():
    seeded(0)
    return mlp(bias=False).double().eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(4, 10, generator=seeded(1), dtype=torch.float64)


def test_lrp_is_a_captum_attribution_that_runs_our_engine(bias_free, x):
    method = LRP(bias_free)
    assert isinstance(method, Attribution) and method.has_convergence_delta() and method.multiplies_by_inputs
    attributions, delta = method.attribute(x, target=1, return_convergence_delta=True)
    ours = L.explain(bias_free, x, target=1)
    assert attributions.shape == x.shape and delta.shape == (len(x),)
    torch.testing.assert_close(attributions, ours.relevance)
    torch.testing.assert_close(delta, ours.delta)
    # the delta is the explained output minus the summed relevance
    torch.testing.assert_close(bias_free(x)[:, 1] - attributions.sum(1), delta)
    assert delta.abs().max() < 1e-4  # bias-free, epsilon: conserved


def test_captums_targets_and_tuple_inputs(bias_free, x):
    method = LRP(bias_free)
    per_example = method.attribute(x, target=[0, 1, 2, 0])
    tensor_target = method.attribute(x, target=torch.tensor([0, 1, 2, 0]))
    torch.testing.assert_close(per_example, tensor_target)
    torch.testing.assert_close(per_example[2], method.attribute(x[2:3], target=2)[0])
    # a tuple of inputs (and extra forward arguments) gives a tuple shaped like them
    halves = (x[:, :4].clone(), x[:, 4:].clone())

    def forward(a, b, scale):
        return bias_free(torch.cat([a, b], 1)) * scale

    both = LRP(bias_free, forward_func=forward).attribute(halves, target=1, additional_forward_args=(2.0,))
    assert isinstance(both, tuple) and [t.shape for t in both] == [h.shape for h in halves]
    torch.testing.assert_close(torch.cat(both, 1), 2.0 * method.attribute(x, target=1))
    # tuple targets index a multi-dimensional output
    grid = LRP(bias_free, forward_func=lambda v: bias_free(v).reshape(len(v), 1, 3))
    torch.testing.assert_close(grid.attribute(x, target=(0, 2)), method.attribute(x, target=2))
    torch.testing.assert_close(
        grid.attribute(x, target=[(0, 2), (0, 1), (0, 0), (0, 2)]), method.attribute(x, target=[2, 1, 0, 2])
    )


def test_smoothgrad_over_lrp_in_captums_noise_tunnel(bias_free, x):
    tunnel = NoiseTunnel(LRP(bias_free))
    assert tunnel.has_convergence_delta()
    exact = tunnel.attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=[0, 1, 2, 0])
    torch.testing.assert_close(exact, LRP(bias_free).attribute(x, target=[0, 1, 2, 0]))
    torch.manual_seed(0)
    noisy, delta = tunnel.attribute(
        x, nt_type="smoothgrad", nt_samples=5, stdevs=0.5, target=1, return_convergence_delta=True
    )
    assert noisy.shape == x.shape and delta.shape == (5 * len(x),)
    assert torch.isfinite(noisy).all() and not torch.allclose(noisy, exact)
    assert delta.abs().max() < 1e-4  # every noisy sample conserves (bias-free)
    # the same noise, drawn again, explained one sample at a time: the mean is SmoothGrad's
    torch.manual_seed(0)
    noise = torch.normal(0, torch.tensor(0.5).repeat((5 * len(x), *x.shape[1:])))
    samples = x.repeat_interleave(5, 0) + noise
    by_hand = L.explain(bias_free, samples, target=1).relevance.reshape(len(x), 5, -1).mean(1)
    torch.testing.assert_close(noisy, by_hand)


def test_captums_visualisation_takes_our_attributions():
    seeded(2)
    model = cnn2d().double().eval()
    images = torch.rand(2, 3, 8, 8, generator=seeded(3), dtype=torch.float64)
    attributions = LRP(model, composite=L.composites.get("epsilon-gamma-box", low=0.0, high=1.0)).attribute(
        images, target=0
    )
    import matplotlib

    matplotlib.use("Agg")
    figure, axis = viz.visualize_image_attr(
        attributions[0].permute(1, 2, 0).numpy(),
        images[0].permute(1, 2, 0).numpy(),
        method="heat_map",
        use_pyplot=False,
    )
    assert axis is not None
    matplotlib.pyplot.close(figure)


@pytest.fixture(scope="module")
def bert():
    import text_models as T

    model = T.encoder("bert", num_labels=2)
    model.config.id2label = {0: "negative", 1: "positive"}
    tokenizer = T.wordpiece_tokenizer()
    encoded = tokenizer(["A great, moving film!", "What a waste"], return_tensors="pt", padding=True)
    return model, tokenizer, encoded


def test_embedding_inputs_as_captums_text_users_feed_them(bert):
    from lrp_domains.text import TextExplainer

    model, tokenizer, encoded = bert
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    embeddings = model.bert.embeddings.word_embeddings(ids).detach()

    def forward(inputs_embeds, attention_mask):
        return model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits

    method = LRP(model, composite="attnlrp", forward_func=forward, labels=["negative", "positive"])
    relevance, delta = method.attribute(
        embeddings, target=1, additional_forward_args=(mask,), return_convergence_delta=True
    )
    assert relevance.shape == embeddings.shape
    # LayerIntegratedGradients-style: token ids in, the embedding layer's output explained
    layer = LayerLRP(model, model.bert.embeddings.word_embeddings, composite="attnlrp")
    from_ids = layer.attribute(ids, target=1, additional_forward_args=(mask,))
    torch.testing.assert_close(from_ids, relevance)
    # the same numbers as the text explainer's word-embedding relevance per token
    expected = TextExplainer(model, tokenizer, composite="attnlrp", labels=["negative", "positive"]).explain(
        ["A great, moving film!", "What a waste"], target=1
    )
    for row, result in enumerate(expected):
        n = len(result.token_ids)
        torch.testing.assert_close(relevance[row, :n].sum(-1), result.token_relevance)
    # a contrast by name: the explained value is one logit minus the other
    contrast, contrast_delta = method.attribute(
        embeddings, target="positive vs negative", additional_forward_args=(mask,), return_convergence_delta=True
    )
    logits = forward(embeddings, mask).detach()
    torch.testing.assert_close(contrast.sum((1, 2)) + contrast_delta, logits[:, 1] - logits[:, 0])
    # Captum's text visualisation takes them: a word row and a data record
    tokens = tokenizer.convert_ids_to_tokens(ids[0])
    scores = relevance[0].sum(-1)
    html = viz.format_word_importances(tokens, scores / scores.abs().max())
    assert all(token in html for token in ("great", "moving", "film"))
    probabilities = F.softmax(logits[0], -1)
    record = viz.VisualizationDataRecord(
        scores,
        float(probabilities.max()),
        "positive",
        "positive",
        "positive",
        float(scores.sum()),
        tokens,
        float(delta[0]),
    )
    assert record.word_attributions is scores and record.convergence_score == pytest.approx(float(delta[0]))


def test_layer_lrp_names_layers_outside_the_model(bert):
    model, _, encoded = bert
    with pytest.raises(ValueError, match="not submodules"):
        LayerLRP(model, torch.nn.Linear(2, 2)).attribute(encoded["input_ids"], target=0)


def test_our_lrp_as_an_inseq_method():
    inseq = pytest.importorskip("inseq", reason="inseq is not installed (pip install '.[peers]')")
    import text_models as T

    import lrp_domains.captum.inseq  # noqa: F401  (registers "lrp_domains")
    from lrp_domains.text import TextExplainer

    assert "lrp_domains" in inseq.list_feature_attribution_methods()
    model = T.decoder("gpt2")
    tokenizer = copy.deepcopy(T.bytelevel_tokenizer())
    tokenizer.unk_token = tokenizer.pad_token = "<|endoftext|>"
    ours = TextExplainer(model, tokenizer, composite="attnlrp")
    prompt, continued = "Paris is the", "Paris is the capital of France"
    attribution_model = inseq.load_model(model, "lrp_domains", tokenizer=tokenizer)
    out = attribution_model.attribute(
        prompt, continued, attributed_fn="logit", step_scores=["logit"], show_progress=False
    )
    steps = out.sequence_attributions[0]
    tokens = [t.token for t in steps.target]
    n_prompt = len(tokenizer(prompt)["input_ids"])
    for step in (0, 3, len(tokens) - n_prompt - 1):  # each generation step: the next token's logit
        position = n_prompt + step
        prefix = tokenizer.convert_tokens_to_string(tokens[:position])
        expected = ours.explain_next_token(prefix, target=int(steps.target[position].id))
        assert expected.explained == pytest.approx(float(steps.step_scores["logit"][step]), rel=1e-4)
        relevance = steps.target_attributions[:position, step].sum(-1)
        torch.testing.assert_close(relevance.double(), expected.token_relevance, rtol=1e-3, atol=1e-5)
