"""``lrp_domains.bio.attribute`` with tangermeme's ``deep_lift_shap`` calling convention, run inside
tangermeme's own ``marginalize`` and ``substitution_effect``; seqlets and relevance as tangermeme's
seqlet tables and ``plot_logo`` read them (issue #28)."""

import inspect

import numpy as np
import pandas as pd
import pytest
import torch
from models import cnn1d, one_hot_batch, seeded
from torch import nn

pytest.importorskip("tangermeme", reason="tangermeme is not installed (pip install '.[models]')")

from tangermeme.deep_lift_shap import deep_lift_shap  # noqa: E402
from tangermeme.ersatz import substitute  # noqa: E402
from tangermeme.marginalize import marginalize  # noqa: E402
from tangermeme.variant_effect import substitution_effect  # noqa: E402

import lrp_domains.bio as bio  # noqa: E402
from lrp_domains.bio import SequenceExplainer, attribute, call_seqlets  # noqa: E402
from lrp_domains.bio.motifs.seqlets import logo_annotations, logo_matrix, to_tangermeme  # noqa: E402


@pytest.fixture(scope="module")
def model():
    seeded(3)
    return cnn1d(n_out=3).double().eval()


@pytest.fixture(scope="module")
def X():
    return one_hot_batch(6, 48, seeded(4)).to(torch.int8)


def test_attribute_is_exported_and_takes_deep_lift_shaps_arguments():
    assert bio.attribute is attribute
    ours = inspect.signature(attribute).parameters
    theirs = inspect.signature(deep_lift_shap).parameters
    assert list(ours)[:2] == ["model", "X"]
    for name in ("args", "target", "batch_size", "device", "hypothetical"):
        assert name in ours and name in theirs
        assert ours[name].kind is theirs[name].kind
    assert ours["target"].default == theirs["target"].default == 0
    assert ours["composite"].default == "genomics"


def test_attribute_equals_the_sequence_explainer(model, X):
    explained = SequenceExplainer(model).explain(X.double(), target=2)
    observed = attribute(model, X, target=2)
    units = attribute(model, X, target=2, hypothetical=True, batch_size=4)
    assert observed.shape == units.shape == X.shape and observed.device.type == "cpu"
    torch.testing.assert_close(observed, explained.relevance)
    torch.testing.assert_close(units, explained.hypothetical)
    # relevance only on the observed letters, summing to the explained value minus delta
    assert (observed[X == 0] == 0).all()
    torch.testing.assert_close(observed.sum((1, 2)), explained.explained - explained.delta)
    # batches do not change anything; the device is where the model is
    torch.testing.assert_close(attribute(model, X, target=2, batch_size=1, device="cpu"), observed)


def test_attribute_reads_targets_as_the_sequence_explainer_does(model, X):
    contrast = attribute(model, X, target="1 vs 0")
    by_hand = SequenceExplainer(model).explain(X.double(), target=lambda out: out[:, 1] - out[:, 0])
    torch.testing.assert_close(contrast, by_hand.relevance)
    per_example = attribute(model, X, target=[0, 1, 2, 0, 1, 2], batch_size=4)
    torch.testing.assert_close(per_example[1], attribute(model, X[1:2], target=1)[0])


class TwoInputs(nn.Module):
    """A model with an extra input per example, as tangermeme passes through ``args``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = cnn1d(n_out=2)

    def forward(self, x, scale):
        return self.body(x) * scale


def test_args_ride_along_with_their_batch(X):
    seeded(5)
    model = TwoInputs().double().eval()
    scale = torch.linspace(0.5, 2.0, len(X), dtype=torch.float64)[:, None]
    with_args = attribute(model, X, args=(scale,), target=1, batch_size=4)
    alone = attribute(model.body, X, target=1)
    torch.testing.assert_close(with_args, alone * scale[:, :, None])


def test_inside_tangermeme_marginalize(model, X):
    motif = "GATAAGCT"
    result = marginalize(model, X, motif, func=attribute, target=1)
    assert result.y_before.shape == result.y_after.shape == X.shape
    torch.testing.assert_close(result.y_before, attribute(model, X, target=1))
    torch.testing.assert_close(result.y_after, attribute(model, substitute(X, motif), target=1))
    # the inserted motif's letters carry relevance after, none of the letters before it changed
    middle = slice(X.shape[-1] // 2 - 4, X.shape[-1] // 2 + 4)
    assert result.y_after[:, :, middle].abs().sum() > 0


def test_inside_tangermeme_substitution_effect(model, X):
    substitutions = torch.tensor([[0, 10, 2], [3, 20, 0], [5, 30, 3]])
    result = substitution_effect(model, X, substitutions, func=attribute, hypothetical=True, target=2)
    edited = X.clone()
    for example, position, letter in substitutions.tolist():
        edited[example, :, position] = 0
        edited[example, letter, position] = 1
    torch.testing.assert_close(result.y_before, attribute(model, X, target=2, hypothetical=True))
    torch.testing.assert_close(result.y_after, attribute(model, edited, target=2, hypothetical=True))
    assert result.y_after.shape == X.shape


def test_inside_tangermeme_ablate(model, X):
    from tangermeme.ablate import ablate

    result = ablate(model, X, 10, 20, n=3, func=attribute, target=1, random_state=0)
    assert result.y_before.shape == X.shape and result.y_after.shape == (len(X), 3, *X.shape[1:])
    torch.testing.assert_close(result.y_before, attribute(model, X, target=1))
    assert (result.y_after[:, :, :, :10] != result.y_before[:, None, :, :10]).any()  # the edits reach outside


@pytest.fixture(scope="module")
def seqlets(model, X):
    explanation = SequenceExplainer(model).explain(X.double(), target=0)
    found = call_seqlets(explanation, null="quantile", alpha=0.1, sign="both")
    assert len(found) > 0
    return explanation, found


def test_seqlets_as_tangermemes_seqlet_table(seqlets):
    explanation, found = seqlets
    table = to_tangermeme(found, explanation)
    assert list(table.columns) == ["example_idx", "start", "end", "attribution"]  # tangermeme's (test below)
    assert table["attribution"].is_monotonic_decreasing
    for row in table.itertuples():
        record = explanation.ids[row.example_idx]
        assert ((found["id"] == record) & (found["start"] == row.start) & (found["end"] == row.end)).any()
        assert row.attribution == pytest.approx(
            float(explanation.per_position[row.example_idx, row.start : row.end].sum()), rel=1e-6
        )
    numbered = found.assign(id=[explanation.ids.index(name) for name in found["id"]])
    pd.testing.assert_frame_equal(to_tangermeme(numbered), table)
    with pytest.raises(Exception, match="ids="):
        to_tangermeme(found)


def test_relevance_and_seqlets_in_tangermemes_plot_logo(seqlets):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tangermeme.plot import plot_logo

    explanation, found = seqlets
    record = found["id"].iloc[0]
    index = explanation.ids.index(record)
    matrix = logo_matrix(explanation, index)
    assert matrix.shape == (4, explanation.lengths[index])
    annotations = logo_annotations(found, record)
    assert list(annotations.columns) == ["motif_name", "start", "end", "strand", "score"]
    assert len(annotations) == (found["id"] == record).sum()
    figure, ax = plt.subplots(figsize=(8, 2))
    assert plot_logo(matrix, ax=ax, annotations=annotations) is ax
    assert plot_logo(logo_matrix(explanation, index, hypothetical=True), ax=ax) is ax
    texts = [text.get_text() for text in ax.texts]
    assert any("seqlet" in text for text in texts)
    plt.close(figure)


@pytest.mark.slow  # numba compiles tangermeme's seqlet caller and memelite's TOMTOM (about a minute here)
def test_tangermemes_seqlet_caller_and_annotate_seqlets_read_ours(seqlets, model, X):
    from tangermeme.annotate import annotate_seqlets
    from tangermeme.seqlet import recursive_seqlets

    explanation, found = seqlets
    table = to_tangermeme(found, explanation)
    theirs = recursive_seqlets(attribute(model, X, target=0).sum(1))  # tangermeme's caller on our relevance
    assert len(theirs) > 0 and list(theirs.columns[:4]) == list(table.columns)
    generator = torch.Generator().manual_seed(0)
    motifs = {f"m{i}": torch.rand(4, 6, generator=generator).softmax(0) for i in range(30)}
    indices, p_values = annotate_seqlets(X, table, motifs)
    assert indices.shape == p_values.shape == (len(table), 1)
    assert np.isfinite(p_values.numpy()).all()
