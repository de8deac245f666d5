"""Latent relevance (CRP): channel relevance, conditional relevance, layer relevance.

Independent expectations: conservation (conditional relevances over all channels sum to the
unconditioned input relevance; channel relevances sum to the layer's total relevance), and a
hand-masked backward pass (a tensor hook that zeroes every other channel's gradient at the layer,
written here from scratch with the public scope API) for conditioning on one channel.
"""

from __future__ import annotations

import copy

import pytest
import torch
from models import assert_unchanged, cnn1d, mlp, one_hot_batch, seeded, snapshot
from text_reference import tiny_bert

import lrp_domains.text  # noqa: F401  (registers the attnlrp composite)
from lrp_domains import composites, explain
from lrp_domains.core.engine.attribution import eval_mode
from lrp_domains.latent import (
    concept_relevance,
    conditional_relevance,
    explain_concepts,
    layer_relevance,
)


def _hand_masked(model, x, layer, channel, axis, composite="epsilon"):
    """Input relevance with the gradient at ``layer``'s output zeroed outside ``channel`` (plus
    what input-layer rules such as z-box write to the input's anchor)."""
    module = dict(model.named_modules())[layer]

    def mask_grad(_, __, out):
        def hook(grad):
            keep = torch.zeros_like(grad)
            index = [slice(None)] * grad.dim()
            index[axis] = channel
            keep[tuple(index)] = grad[tuple(index)]
            return keep

        out.register_hook(hook)

    handle = module.register_forward_hook(mask_grad)
    try:
        chosen = composites.get(composite) if isinstance(composite, str) else composite
        with eval_mode(model), torch.enable_grad(), chosen.context(model) as scope:
            (leaf,) = scope.track(x)
            out = model(leaf)
            anchor = scope.inputs.anchor(leaf)
            wrt = [leaf] + ([anchor] if anchor is not None else [])
            grads = torch.autograd.grad(out.gather(1, out.argmax(1, keepdim=True)).sum(), wrt, allow_unused=True)
    finally:
        handle.remove()
    relevance = leaf * grads[0] if grads[0] is not None else torch.zeros_like(leaf)
    if len(grads) > 1 and grads[1] is not None:
        relevance = relevance + grads[1]
    return relevance.detach()


@pytest.mark.parametrize("layer", ["0", "2", "4", "6"])
def test_cnn_conditional_relevances_sum_to_input_relevance(layer):
    g = seeded(0)
    model = cnn1d(bias=False).double()
    x = one_hot_batch(6, 24, g).double()
    result = explain_concepts(model, x, layer, None, composite="epsilon")
    reference = explain(model, x, composite="epsilon")
    assert result.conditional.shape == (6, 8, 4, 24)
    torch.testing.assert_close(result.relevance, reference.relevance, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.conditional.sum(1), reference.relevance, rtol=0, atol=1e-6)
    assert result.delta.abs().max() < 1e-6
    # every path runs through the layer: the channel relevances hold all input relevance
    torch.testing.assert_close(result.channel_relevance.sum(1), reference.relevance.sum((1, 2)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("layer", ["1", "3"])
def test_mlp_conditional_relevances_sum_and_conserve(layer):
    seeded(1)
    model = mlp(bias=False).double()
    x = torch.randn(5, 10, dtype=torch.float64)
    result = explain_concepts(model, x, layer, None, composite="epsilon")
    assert result.conditional.shape == (5, 16, 10)
    torch.testing.assert_close(result.conditional.sum(1), result.relevance, rtol=0, atol=1e-6)
    # bias-free, epsilon 1e-6: the layer's channel relevances sum to the explained logit
    torch.testing.assert_close(result.channel_relevance.sum(1), result.explained, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layer, channel", [("0", 3), ("2", 5), ("6", 0)])
def test_one_channel_equals_hand_masked_backward(layer, channel):
    g = seeded(2)
    model = cnn1d(bias=True).double()
    x = one_hot_batch(4, 20, g).double()
    ours = conditional_relevance(model, x, layer, [channel], composite="epsilon")
    torch.testing.assert_close(ours[:, 0], _hand_masked(model, x, layer, channel, 1), rtol=0, atol=1e-10)


def _composite(name):
    from lrp_domains.bio.composites import genomics

    return genomics() if name == "genomics" else composites.get(name)


@pytest.mark.parametrize("name", ["epsilon", "genomics", "zplus", "alpha2beta1", "epsilon-gamma-box"])
def test_first_layer_filters_equal_hand_masked_and_sum_to_input_relevance(name):
    """Conditioning on the channels of the layer that reads the input (computed per channel slice
    of the layer) against the hand-masked backward, for z-box, gamma, z+, alpha-beta, epsilon."""
    g = seeded(8)
    model = cnn1d(bias=True).double()
    x = one_hot_batch(4, 20, g).double()
    composite = composites.get(name, low=0.0, high=1.0) if name == "epsilon-gamma-box" else _composite(name)
    result = explain_concepts(model, x, "0", None, composite=composite)
    for channel in (0, 5):
        torch.testing.assert_close(
            result.conditional[:, channel], _hand_masked(model, x, "0", channel, 1, composite), rtol=0, atol=1e-10
        )
    assert result.delta.abs().max() < 1e-8


@pytest.mark.parametrize("name", ["epsilon", "zplus", "alpha2beta1"])
def test_first_dense_layer_of_signed_inputs(name):
    seeded(9)
    model = mlp().double()
    x = torch.randn(6, 10, dtype=torch.float64)
    result = explain_concepts(model, x, "0", None, composite=name)
    for channel in (2, 11):
        torch.testing.assert_close(
            result.conditional[:, channel], _hand_masked(model, x, "0", channel, 1, name), rtol=0, atol=1e-10
        )
    assert result.delta.abs().max() < 1e-8


def test_channel_batching_does_not_change_results():
    g = seeded(3)
    model = cnn1d().double()
    x = one_hot_batch(5, 16, g).double()
    channels = [7, 0, 3, 3, 5]
    one = conditional_relevance(model, x, "2", channels, channel_batch=1)
    many = conditional_relevance(model, x, "2", channels, channel_batch=4, batch_size=2)
    torch.testing.assert_close(one, many, rtol=0, atol=1e-10)
    torch.testing.assert_close(one[:, 2], one[:, 3], rtol=0, atol=0)


def test_concept_relevance_sums_over_positions_of_layer_relevance():
    g = seeded(4)
    model = cnn1d().double()
    x = one_hot_batch(3, 16, g).double()
    at_layer = layer_relevance(model, x, ["2"], composite="epsilon")["2"]
    channels = concept_relevance(model, x, "2", composite="epsilon")
    assert channels.shape == (3, 8)
    torch.testing.assert_close(channels, at_layer.sum(2), rtol=0, atol=1e-12)


def test_tiny_bert_conditional_over_hidden_units_sums_to_input_relevance():
    """A transformer layer's output is a cut of the graph: its hidden units' conditional
    relevances (channel axis -1) sum to the embedding relevance (AttnLRP, float64)."""
    model = tiny_bert(seed=0)
    seeded(5)
    embeds = torch.randn(2, 6, 32, dtype=torch.float64)
    inputs = {"inputs_embeds": embeds, "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    result = explain_concepts(
        model, inputs, "bert.encoder.layer.0", None, composite="attnlrp", channel_axis=-1, channel_batch=11
    )
    conditional = result.conditional["inputs_embeds"]
    assert conditional.shape == (2, 32, 6, 32)
    torch.testing.assert_close(conditional.sum(1), result.relevance["inputs_embeds"], rtol=0, atol=1e-6)
    reference = explain(model, inputs, composite="attnlrp").relevance["inputs_embeds"]
    torch.testing.assert_close(result.relevance["inputs_embeds"], reference, rtol=0, atol=1e-10)
    # per-token relevance of every layer's output, one pass: without biases the residual stream
    # carries all of the explained logit from layer to layer (CP-LRP conserves)
    bias_free = tiny_bert(seed=0, zero_biases=True)
    layers = layer_relevance(bias_free, inputs, ["bert.encoder.layer.0", "bert.encoder.layer.1"], composite="cp-lrp")
    total = explain(bias_free, inputs, composite="cp-lrp").explained
    for value in layers.values():
        assert value.shape == (2, 6, 32)
        torch.testing.assert_close(value.sum((1, 2)), total, rtol=1e-6, atol=1e-6)


def test_model_unchanged_also_after_errors():
    g = seeded(6)
    model = cnn1d()
    model.train()
    model[0].weight.requires_grad_(False)
    x = one_hot_batch(2, 16, g)
    before = snapshot(model)
    explain_concepts(model, x, "0", [1, 2])
    assert_unchanged(before, snapshot(model))
    for bad in (dict(layer="nope"), dict(layer="0", channels=[99]), dict(layer="0", channel_axis=5)):
        options = {"channels": [0], **bad}
        with pytest.raises(ValueError):
            explain_concepts(model, x, options.pop("layer"), options.pop("channels"), **options)
        assert_unchanged(before, snapshot(model))
    assert copy.deepcopy(model) is not None


def test_clear_errors():
    g = seeded(7)
    model = cnn1d()
    x = one_hot_batch(2, 16, g)
    with pytest.raises(ValueError, match="no module of that name.*'0'|no module of that name"):
        concept_relevance(model, x, "conv9")
    with pytest.raises(ValueError, match=r"outside layer '0'.s 8 channels"):
        conditional_relevance(model, x, "0", [8])

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.layer(self.layer(x))

    with pytest.raises(ValueError, match="ran 2 times"):
        concept_relevance(Twice(), torch.randn(2, 4), "layer")


def test_input_layer_path_is_taken_and_deeper_layers_replay(monkeypatch):
    import lrp_domains.core.latent as latent

    used = []
    original = latent._input_layer_conditional

    def spy(*args, **kwargs):
        found = original(*args, **kwargs)
        used.append(found is not None)
        return found

    monkeypatch.setattr(latent, "_input_layer_conditional", spy)
    g = seeded(10)
    model = cnn1d().double()
    x = one_hot_batch(3, 16, g).double()
    explain_concepts(model, x, "0", [1, 2])
    explain_concepts(model, x, "4", [1, 2])
    assert used == [True, False]
