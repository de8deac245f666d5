"""Contrastive targets by name ("positive vs negative", a token against a foil) through the one
target resolver, and the specificity target of multi-track genomics models (issue #28): each target
computed by hand, and conserved on bias-free models."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from models import EXPRESSION_CLASSES, EXPRESSION_GENES, expression_mlp, mlp, one_hot_batch, seeded
from torch import nn
from typer.testing import CliRunner

import lrp_domains as L
from lrp_domains.bio import SequenceExplainer, attribute, parse_sequence_target, specificity_target
from lrp_domains.bio.sequences.targets import ContrastTarget, SpecificityTarget
from lrp_domains.cli import app
from lrp_domains.core.engine.targets import Contrast, resolve_targets
from lrp_domains.errors import InputError

LABELS = ["negative", "positive", "non-toxic", "non", "toxic"]


# -- the resolver -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, positive, negative",
    [
        ("positive vs negative", 1, 0),
        ("Positive VS negative", 1, 0),
        ("positive vs. 0", 1, 0),
        ("positive-negative", 1, 0),
        ("non-toxic-positive", 2, 1),  # one split only: "non-toxic" and "positive"
        ("4 vs 3", 4, 3),
        ("1-0", 1, 0),
    ],
)
def test_contrasts_by_name(text, positive, negative):
    target = resolve_targets(text, 3, LABELS)
    assert isinstance(target, Contrast)
    assert (target.positive, target.negative, str(target)) == (positive, negative, text)


def test_labels_with_a_dash_stay_labels_and_bad_contrasts_say_why():
    torch.testing.assert_close(resolve_targets("non-toxic", 2, LABELS), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="unknown label 'neutral'"):
        resolve_targets("positive vs neutral", 2, LABELS)
    with pytest.raises(ValueError, match="unknown label 'neutral'"):
        resolve_targets("neutral", 2, LABELS)  # no contrast: the plain error as before
    with pytest.raises(ValueError, match="two different outputs"):
        resolve_targets("positive vs positive", 2, LABELS)
    with pytest.raises(ValueError, match="splits at '-' in 2 ways"):
        resolve_targets("a-b-c", 2, ["a", "b", "c", "a-b", "b-c"])
    with pytest.raises(ValueError, match="no names"):
        resolve_targets("positive vs negative", 2, None)
    with pytest.raises(ValueError, match="give it once"):
        resolve_targets(["positive vs negative", "positive"], 2, LABELS)
    with pytest.raises(ValueError, match="out of range"):
        Contrast(7, 0)(torch.zeros(2, 3))


def test_a_contrast_is_conserved_as_any_target():
    seeded(0)
    model = mlp(n_out=5, bias=False).double().eval()
    x = torch.randn(6, 10, generator=seeded(1), dtype=torch.float64)
    result = L.explain(model, x, target="toxic vs non-toxic", labels=LABELS)
    output = model(x).detach()
    torch.testing.assert_close(result.explained, output[:, 4] - output[:, 2])  # by hand
    torch.testing.assert_close(result.relevance.sum(1) + result.delta, result.explained)
    assert result.delta.abs().max() < 1e-4 * result.explained.abs().max()  # bias-free: conserved
    assert result.target is None  # a callable chose the value


def test_genes_take_contrasts_by_class_name():
    from lrp_domains.bio import ExpressionExplainer

    model, genes, classes = expression_mlp()
    data = pd.DataFrame(
        np.random.default_rng(0).random((5, len(genes))), columns=genes, index=[f"c{i}" for i in range(5)]
    )
    explained = ExpressionExplainer(model, genes, classes).explain(data, target="B vs A")
    values = torch.as_tensor(data.to_numpy(), dtype=torch.float32)
    by_hand = L.explain(model, values, target=lambda out: out[:, 1] - out[:, 0], composite="epsilon")
    assert classes == EXPRESSION_CLASSES and genes == EXPRESSION_GENES
    np.testing.assert_allclose(explained.relevance.to_numpy(), by_hand.relevance.double().numpy(), rtol=1e-6)


# -- text: classifiers and decoders -----------------------------------------------------------------
def test_a_classifier_explains_one_label_against_another(model_dir):
    from lrp_domains.text import TextExplainer

    explainer = TextExplainer.from_pretrained(model_dir)
    result = explainer.explain("A great, moving film!", target="positive vs negative")
    probabilities = result.probabilities
    assert result.target == "positive vs negative"
    assert result.explained == pytest.approx(math.log(probabilities["positive"] / probabilities["negative"]), rel=1e-5)
    dashed = explainer.explain("A great, moving film!", target="positive-negative")
    assert dashed.explained == pytest.approx(result.explained)


def test_the_command_line_takes_a_contrast(model_dir, tmp_path):
    out = tmp_path / "result.json"
    done = CliRunner().invoke(
        app,
        ["text", "explain", "A great, moving film!", "--model", model_dir, "--target", "positive vs negative"],
    )
    assert done.exit_code == 0, done.output
    assert "explained: positive vs negative" in done.output
    done = CliRunner().invoke(
        app,
        ["text", "explain", "A film", "--model", model_dir, "--target", "positive-negative", "--format", "json"]
        + ["--out", str(out)],
    )
    assert done.exit_code == 0, done.output
    payload = json.loads(out.read_text())
    assert payload["target"] == "positive-negative"
    probabilities = payload["probabilities"]
    assert payload["explained"] == pytest.approx(math.log(probabilities["positive"] / probabilities["negative"]), 1e-5)


def test_a_decoder_explains_a_token_against_a_foil():
    import text_models as T

    from lrp_domains.text import TextExplainer

    model = T.decoder("llama")
    tokenizer = T.bytelevel_tokenizer()
    of, the = (tokenizer(word, add_special_tokens=False)["input_ids"] for word in (" of", " the"))
    assert len(of) == len(the) == 1
    explainer = TextExplainer(model, tokenizer, composite="cp-lrp")
    prompt = "Paris is the capital"
    result = explainer.explain_next_token(prompt, target=" of vs  the")  # each side as written, spaces kept
    logits = model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1].detach()
    assert result.target == " of vs  the"
    assert result.explained == pytest.approx(float(logits[of[0]] - logits[the[0]]), rel=1e-6)
    tokens = explainer.explain_next_token(prompt, target="Ġof vs Ġthe")
    assert tokens.explained == pytest.approx(result.explained)
    with pytest.raises(ValueError, match="not one"):
        explainer.explain_next_token(prompt, target=" of vs  the capital")
    with pytest.raises(ValueError, match="not one"):  # no dash form for decoders: a vocabulary is too large
        explainer.explain_next_token(prompt, target=" of- the")


# -- sequences: contrasts and specificity -------------------------------------------------------------
N_TRACKS, LENGTH, POOL = 6, 40, 4


class Tracks(nn.Module):
    """A bias-free multi-track model: ``(N, 4, L)`` -> ``(N, bins, tracks)`` (Enformer's layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(4, 8, 5, padding=2, bias=False),
            nn.ReLU(),
            nn.AvgPool1d(POOL),
            nn.Conv1d(8, N_TRACKS, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).transpose(1, 2)


def tracks_model() -> nn.Module:
    """``--model test_targets_by_name:tracks_model``."""
    seeded(11)
    return Tracks().eval()


def by_hand(output: torch.Tensor, on: list[int], off: list[int], bins: slice) -> torch.Tensor:
    """The mean over the on-target tracks minus the mean over the off-target ones, each summed over the bins."""
    window = output[:, bins]  # (N, bins, tracks)
    return window[:, :, on].sum(1).mean(1) - window[:, :, off].sum(1).mean(1)


def test_specificity_target_by_hand_and_conserved():
    model = tracks_model().double()
    x = one_hot_batch(5, LENGTH, seeded(12)).double()
    output = model(x).detach()
    rest = [t for t in range(N_TRACKS) if t not in (1, 4)]
    cases = [
        (specificity_target([1, 4], bins=(2, 7)), [1, 4], rest, slice(2, 7)),
        (specificity_target(3), [3], [0, 1, 2, 4, 5], slice(None)),
        (specificity_target([1, 4], bins=(0, 5), off=[0, 2]), [1, 4], [0, 2], slice(0, 5)),
    ]
    for target, on, off, bins in cases:
        result = L.explain(model, x, target=target, composite="epsilon")
        torch.testing.assert_close(result.explained, by_hand(output, on, off, bins))
        torch.testing.assert_close(result.relevance.sum((1, 2)) + result.delta, result.explained)
        assert result.delta.abs().max() < 1e-4 * result.explained.abs().max()  # bias-free: conserved
    # Borzoi's layout (tracks, bins) gives the same values
    transposed = specificity_target([1, 4], bins=(2, 7), layout="NCL")(output.transpose(1, 2))
    torch.testing.assert_close(transposed, by_hand(output, [1, 4], rest, slice(2, 7)))
    with pytest.raises(InputError, match="both on and off"):
        specificity_target([1, 2], off=[2, 3])
    with pytest.raises(InputError, match="none of them off target"):
        specificity_target(list(range(N_TRACKS)))(output)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("specific: tracks 1,4 vs rest, bins 2-7", SpecificityTarget([1, 4], (2, 7))),
        ("specific: tracks 1,4 vs 0,2, bins 0-5", SpecificityTarget([1, 4], (0, 5), off=[0, 2])),
        ("specific: track 3", SpecificityTarget(3)),
        ("Specificity: tracks=1,4 vs others layout=NCL", SpecificityTarget([1, 4], layout="NCL")),
    ],
)
def test_specificity_from_text(text, expected):
    parsed = parse_sequence_target(text)
    assert isinstance(parsed, SpecificityTarget)
    assert (parsed._tracks, parsed.bins, parsed._off, parsed.layout) == (
        expected._tracks,
        expected.bins,
        expected._off,
        expected.layout,
    )


def test_bad_specificity_and_contrast_texts_say_what_to_write():
    with pytest.raises(InputError, match="specific: tracks 3,7 vs rest"):
        parse_sequence_target("specific: all of them")
    with pytest.raises(InputError, match="must be an output index"):
        parse_sequence_target("counts vs 0")
    assert isinstance(parse_sequence_target("1 vs 0"), ContrastTarget)


def test_the_sequence_explainer_and_attribute_take_them_by_name():
    model = tracks_model().double()
    x = one_hot_batch(4, LENGTH, seeded(13)).double()
    output = model(x).detach()
    explainer = SequenceExplainer(model)
    text = "specific: tracks 1,4 vs rest, bins 2-7"
    result = explainer.explain(x, target=text)
    rest = [t for t in range(N_TRACKS) if t not in (1, 4)]
    torch.testing.assert_close(result.explained, by_hand(output, [1, 4], rest, slice(2, 7)))
    torch.testing.assert_close(attribute(model, x, target=text), result.relevance)
    seeded(14)
    classifier = nn.Sequential(nn.Conv1d(4, 4, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3, bias=False))
    classifier(x.float())
    classifier = classifier.double().eval()
    contrast = SequenceExplainer(classifier).explain(x, target="2 vs 0")
    scores = classifier(x).detach()
    torch.testing.assert_close(contrast.explained, scores[:, 2] - scores[:, 0])


def test_the_command_line_takes_a_specificity_target(tmp_path):
    from lrp_domains.run import read_results

    x = one_hot_batch(3, LENGTH, seeded(15))
    letters = np.array(list("ACGT"))[x.argmax(1).numpy()]
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">s{i}\n{''.join(row)}\n" for i, row in enumerate(letters)))
    out = tmp_path / "out"
    done = CliRunner().invoke(
        app,
        ["bio", "sequences", str(fasta), "--out", str(out), "--model", "test_targets_by_name:tracks_model"]
        + ["--target", "specific: tracks 1,4 vs rest, bins 2-7", "--motifs", "none", "--no-progress"],
    )
    assert done.exit_code == 0, done.output
    rows = read_results(out / "run").sort_values("row")
    output = tracks_model()(x).detach().double()
    rest = [t for t in range(N_TRACKS) if t not in (1, 4)]
    np.testing.assert_allclose(rows["explained"].to_numpy(), by_hand(output, [1, 4], rest, slice(2, 7)).numpy(), 1e-5)
    bad = CliRunner().invoke(
        app,
        ["bio", "sequences", str(fasta), "--out", str(tmp_path / "o"), "--model", "test_targets_by_name:tracks_model"]
        + ["--target", "specific: tracks 1,2 vs 2", "--motifs", "none", "--no-progress"],
    )
    assert bad.exit_code != 0 and "both on and off target" in bad.output


def test_the_ledger_balances_under_contrast_and_specificity_targets():
    """The ledger applies as for any target: on models with biases, input relevance + what each
    module absorbed + numerical = the contrast (or specificity) value, per example."""
    seeded(0)
    model = mlp(n_out=5, bias=True).double().eval()
    x = torch.randn(6, 10, generator=seeded(1), dtype=torch.float64)
    tracks = tracks_model().double()
    onehot = one_hot_batch(5, LENGTH, seeded(12)).double()
    for net, inputs, target, labels in (
        (model, x, "toxic vs non-toxic", LABELS),
        (tracks, onehot, specificity_target([1, 4], bins=(2, 7)), None),
    ):
        result = L.explain(net, inputs, target=target, labels=labels, composite="epsilon", ledger=True)
        rows = result.ledger_rows
        assert rows is not None and len(rows.modules) > 0
        input_relevance = result.relevance.reshape(len(inputs), -1).sum(1).double()
        total = input_relevance + rows.absorbed.sum(0) + rows.numerical
        torch.testing.assert_close(total, result.explained.double(), rtol=1e-10, atol=1e-12)
        assert rows.numerical.abs().max() < 1e-10 * result.explained.abs().max()  # nothing unseen
