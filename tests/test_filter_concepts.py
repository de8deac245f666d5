"""Filter concepts (:mod:`lrp_domains.bio.concepts.filters`, ``lrp-domains bio concepts``).

Independent expectations: a hand-built CNN whose one read-out filter *is* the CTCF motif (its
weights the log-odds of the CTCF PPM, the other filters small noise, a dense layer that reads only
that filter) must give that filter all the relevance, conditional seqlets on the planted sites, an
aligned PPM that is CTCF's, and a JASPAR match to CTCF; the filter weights alone must match CTCF
too. Channel relevance equals the core's :func:`lrp_domains.latent.concept_relevance`; reference
examples are the rows where a filter's relevance is largest; the model is left as it was.
"""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest
import torch
from models import assert_unchanged, cnn1d, snapshot
from torch import nn
from typer.testing import CliRunner

from lrp_domains.bench.data.synthetic import make_dataset, motif_ppms, write_fasta
from lrp_domains.bio import SequenceExplainer
from lrp_domains.bio.concepts.filters import (
    consensus,
    explain_filters,
    filter_weight_matches,
    first_conv,
    trimmed,
    weights_to_ppm,
)
from lrp_domains.bio.motifs.seqlets import load_motifs
from lrp_domains.cli import app
from lrp_domains.errors import InputError
from lrp_domains.latent import concept_relevance
from lrp_domains.report.concepts import COLUMNS

CTCF = "MA0139.2"
#: The filter that carries the motif in the hand-built model.
K = 2
ALPHABET = "ACGT"


def _argmax_string(ppm: np.ndarray) -> str:
    return "".join(ALPHABET[j] for j in ppm.argmax(0))


def _rc(matrix: np.ndarray) -> np.ndarray:
    return matrix[::-1, ::-1]


def motif_cnn(ppm: np.ndarray, filters: int = 6, k: int = K) -> nn.Sequential:
    """Conv1d whose filter ``k`` is ``log(ppm / 0.25)`` (the others noise), ReLU, global max pool,
    and a Linear that reads filter ``k`` only."""
    torch.manual_seed(0)
    width = ppm.shape[1]
    conv = nn.Conv1d(4, filters, width, padding=width // 2)
    head = nn.Linear(filters, 1)
    with torch.no_grad():
        conv.weight.normal_(0.0, 0.01)
        conv.bias.zero_()
        conv.weight[k] = torch.as_tensor(np.log(ppm / 0.25), dtype=torch.float32)
        head.weight.zero_()
        head.weight[0, k] = 1.0
        head.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(), head)


@pytest.fixture(scope="module")
def jaspar():
    return load_motifs("JASPAR2024")


@pytest.fixture(scope="module")
def ctcf_ids(jaspar):
    return {m.matrix_id for m in jaspar if m.name == "CTCF"}


@pytest.fixture(scope="module")
def planted():
    """Sequences of 100 bases with one CTCF site each, on the forward strand (the filter reads
    that strand only)."""
    data = make_dataset(60, length=100, seed=1, positive_fraction=1.0, motifs_per_sequence=(1, 1), motif_ids=[CTCF])
    keep = [i for i, placed in enumerate(data.placements) if placed[0].strand == "+"]
    assert len(keep) >= 15
    return data.subset(keep)


@pytest.fixture(scope="module")
def ctcf_model():
    return motif_cnn(motif_ppms([CTCF])[CTCF][1])


@pytest.fixture(scope="module")
def ctcf_concepts(ctcf_model, planted, jaspar):
    return explain_filters(SequenceExplainer(ctcf_model), planted.sequences, ids=planted.ids, top=3, motifs=jaspar)


# -- the hand-built CTCF filter -------------------------------------------------------------------
def test_the_motif_filter_carries_all_the_relevance(ctcf_concepts):
    frame = ctcf_concepts.frame
    assert frame["concept"].iloc[0] == K
    assert frame["share"].iloc[0] == pytest.approx(1.0, abs=1e-3)
    totals = ctcf_concepts.channel_relevance.sum(0)
    assert np.argmax(totals) == K and totals[K] > 0
    assert list(frame["share"]) == sorted(frame["share"], reverse=True)


def test_conditional_seqlets_sit_on_the_planted_sites(ctcf_concepts, planted):
    width = motif_ppms([CTCF])[CTCF][1].shape[1]
    sites = {name: (placed[0].start, placed[0].start + width) for name, placed in zip(planted.ids, planted.placements)}
    seqlets = ctcf_concepts.seqlet_table
    mine = seqlets[seqlets["concept"] == K]
    on_site = [
        start < sites[name][1] and sites[name][0] < end
        for name, start, end in zip(mine["id"], mine["start"], mine["end"])
    ]
    assert len(mine) and np.mean(on_site) >= 0.9, mine
    assert mine["id"].nunique() >= 0.8 * len(planted)
    row = ctcf_concepts.frame.set_index("concept").loc[K]
    assert row["seqlets"] >= 0.8 * len(planted)


def test_the_aligned_ppm_and_consensus_are_the_planted_motif(ctcf_concepts):
    ppm = motif_ppms([CTCF])[CTCF][1]
    aligned = ctcf_concepts.ppm[K]
    assert aligned.shape == ppm.shape  # width: the filter's kernel size
    np.testing.assert_allclose(aligned.sum(0), 1.0)
    similarity = max(np.corrcoef(aligned.ravel(), m.ravel())[0, 1] for m in (ppm, _rc(ppm)))
    assert similarity > 0.9
    text = ctcf_concepts.frame.set_index("concept").loc[K, "consensus"]
    assert len(text.replace("N", "")) >= 8, text
    pattern = text.replace("N", ".")
    assert re.search(pattern, _argmax_string(ppm)) or re.search(pattern, _argmax_string(_rc(ppm))), text


def test_the_motif_filter_is_matched_to_ctcf(ctcf_concepts, ctcf_ids):
    row = ctcf_concepts.frame.set_index("concept").loc[K]
    assert row["best_match"] == "CTCF" and row["match_id"] in ctcf_ids
    assert row["match_e"] <= 0.05
    assert "CTCF" in ctcf_concepts.describe(K)


def test_filter_weights_as_ppm_match_ctcf(ctcf_model, jaspar, ctcf_ids):
    table = filter_weight_matches(ctcf_model, motifs=jaspar)
    assert list(table["concept"]) == list(range(6))
    row = table.set_index("concept").loc[K]
    assert row["best_match"] == "CTCF" and row["match_id"] in ctcf_ids and row["match_e"] <= 0.05
    assert re.search(row["consensus"].replace("N", "."), _argmax_string(motif_ppms([CTCF])[CTCF][1]))


# -- small helpers -------------------------------------------------------------------------------
def test_weights_to_ppm_scales_the_largest_weight_to_four():
    weights = np.zeros((4, 3))
    weights[1, 0] = 2.0
    weights[3, 2] = -1.0
    ppm = weights_to_ppm(weights)
    np.testing.assert_allclose(ppm.sum(0), 1.0)
    np.testing.assert_allclose(ppm[:, 0], np.array([1, np.e**4, 1, 1]) / (3 + np.e**4))
    np.testing.assert_allclose(ppm[:, 1], 0.25)
    np.testing.assert_allclose(ppm[:, 2], np.array([1, 1, 1, np.e**-2]) / (3 + np.e**-2))
    np.testing.assert_allclose(weights_to_ppm(np.zeros((4, 2))), 0.25)


def test_trimmed_keeps_first_to_last_strong_column():
    ppm = np.arange(24.0).reshape(4, 6)
    strength = np.array([0.1, 0.5, 1.0, 0.2, 0.4, 0.05])
    np.testing.assert_array_equal(trimmed(ppm, strength), ppm[:, 1:5])
    np.testing.assert_array_equal(trimmed(ppm, strength, keep=0.9), ppm[:, 2:3])
    assert trimmed(ppm, np.zeros(6)).shape == (4, 0)


def test_consensus_letters_and_weak_columns():
    matrix = np.array(
        [[0.0, 1.0, 0.0, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0], [0.05, 0.0, 0.0, 0.0, 0.9], [0.0, 0.0, 0.1, 0.0, 0.0]]
    )
    assert consensus(matrix, ALPHABET) == "ANNG"  # the weak first column is stripped
    assert consensus(np.zeros((4, 3)), ALPHABET) == ""


# -- agreement with the core ---------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["0", "4"])
@pytest.mark.parametrize("composite", ["genomics", "epsilon"])
def test_channel_relevance_is_the_cores_and_examples_are_its_top_rows(layer, composite):
    torch.manual_seed(0)
    model = cnn1d()
    data = make_dataset(12, length=40, seed=0, motifs_per_sequence=(1, 1))
    explainer = SequenceExplainer(model, composite=composite)
    concepts = explain_filters(explainer, data.sequences, ids=data.ids, layer=layer, top=None, motifs=None, examples=3)
    reference = concept_relevance(model, data.onehot, layer, composite=explainer.composite).double().numpy()
    assert concepts.channel_relevance.shape == (12, 8)
    np.testing.assert_allclose(concepts.channel_relevance, reference, rtol=1e-6, atol=1e-9)
    frame = concepts.frame
    assert sorted(frame["concept"]) == list(range(8)) and concepts.ids == data.ids
    totals = reference.sum(0)
    np.testing.assert_allclose(frame["share"], totals[frame["concept"]] / totals.sum(), rtol=1e-6)
    assert list(frame["share"]) == sorted(frame["share"], reverse=True)
    index = {name: i for i, name in enumerate(data.ids)}
    for concept, examples in zip(frame["concept"], frame["reference_examples"]):
        listed = [index[name] for name in examples.split(",")]
        assert len(set(listed)) == 3, examples
        # the three largest values of the column, largest first (ties in any order)
        np.testing.assert_allclose(
            reference[listed, concept],
            np.sort(reference[:, concept])[::-1][:3],
            rtol=1e-6,
            atol=1e-9,
            err_msg=str(concept),
        )
    assert frame["best_match"].eq("").all() and frame["match_e"].isna().all()  # motifs=None: no matching


def test_first_conv():
    assert first_conv(cnn1d()) == "0"
    with pytest.raises(InputError, match="no convolution layer"):
        first_conv(nn.Sequential(nn.Flatten(), nn.Linear(8, 2)))


# -- errors --------------------------------------------------------------------------------------
@pytest.fixture
def small():
    return make_dataset(8, length=40, seed=2, motifs_per_sequence=(1, 1))


def test_unknown_layer_names_the_convolutions(small):
    with pytest.raises(InputError) as error:
        explain_filters(SequenceExplainer(cnn1d()), small.sequences, layer="nope", motifs=None)
    message = str(error.value)
    assert "nope" in message and "convolutions" in message and "'0'" in message and "'4'" in message


def test_sequences_of_different_lengths_are_refused():
    with pytest.raises(InputError, match="one length"):
        explain_filters(SequenceExplainer(cnn1d()), ["ACGT" * 10, "ACGT" * 12], motifs=None)


def test_a_model_without_convolution_needs_a_layer(small):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4 * 40, 2))
    with pytest.raises(InputError, match="no convolution layer"):
        explain_filters(SequenceExplainer(model), small.sequences, motifs=None)
    with pytest.raises(InputError, match="no convolution layer"):
        filter_weight_matches(model, motifs=None)


def test_filter_weights_need_a_first_layer_conv():
    with pytest.raises(InputError, match="not a first-layer Conv1d"):
        filter_weight_matches(cnn1d(), layer="4", motifs=None)


def test_top_zero_describes_no_filter_or_is_refused(small):
    """``top=0`` (the CLI refuses it; the library takes it): an empty description or a
    ValueError, not a crash."""
    try:
        concepts = explain_filters(SequenceExplainer(cnn1d()), small.sequences, top=0, motifs=None)
    except ValueError:
        return
    assert len(concepts.frame) == 0 and concepts.channel_relevance.shape == (8, 8)


def test_a_pooling_layer_is_explained_or_refused(small):
    """``layer`` may name any module (the docstring: width is the layer's kernel size, else the
    default); a MaxPool1d's ``kernel_size`` is an int."""
    model = cnn1d()
    try:
        concepts = explain_filters(SequenceExplainer(model), small.sequences, layer="3", top=2, motifs=None)
    except InputError:
        return
    assert all(cwm.shape == (4, model[3].kernel_size) for cwm in concepts.cwm.values())


# -- the model is left as it was -----------------------------------------------------------------
def _trained_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = cnn1d()
    model.train()  # BatchNorm in training mode: a forward outside eval mode would move its statistics
    model[4].weight.requires_grad_(False)  # a frozen layer stays frozen, the others trainable
    return model


def test_the_model_is_unchanged(small, jaspar):
    model = _trained_model()
    before = snapshot(model)
    explain_filters(SequenceExplainer(model), small.sequences, top=2, motifs=jaspar)
    assert_unchanged(before, snapshot(model))
    assert model.training and not model[4].weight.requires_grad


@pytest.mark.parametrize(
    "options",
    [{"target": 5}, {"width": 50}, {"layer": "nope"}],
    ids=["target-inside-the-pass", "width-after-the-pass", "layer-before"],
)
def test_the_model_is_unchanged_after_an_error(small, options):
    model = _trained_model()
    before = snapshot(model)
    with pytest.raises(ValueError):
        explain_filters(SequenceExplainer(model), small.sequences, motifs=None, **options)
    assert_unchanged(before, snapshot(model))


# -- the command line ----------------------------------------------------------------------------
def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def fasta(tmp_path_factory):
    data = make_dataset(40, length=200, seed=3, positive_fraction=1.0)
    return write_fasta(tmp_path_factory.mktemp("concepts") / "in.fa", data)


def _check_report(out, rows: int) -> pd.DataFrame:
    frame = pd.read_csv(out / "concepts.tsv", sep="\t", keep_default_na=False)
    assert tuple(frame.columns) == COLUMNS and len(frame) == rows
    shares = frame["share"].astype(float).tolist()
    assert shares == sorted(shares, reverse=True) and all(s >= 0 for s in shares)
    page = (out / "report.html").read_text(encoding="utf-8")
    expected = {f"filter_{c}.png" for c, n in zip(frame["concept"], frame["seqlets"]) if int(n) > 0}
    assert {p.name for p in (out / "logos").iterdir()} == expected  # no stale logo, no missing one
    for name in expected:  # the page shows each logo file (embedded as a data URI)
        assert base64.b64encode((out / "logos" / name).read_bytes()).decode("ascii") in page, name
    return frame


def test_cli_concepts_report_and_a_second_run(fasta, tmp_path):
    out = tmp_path / "out"
    first = run("bio", "concepts", fasta, "--out", out, "--top", 3)
    assert first.exit_code == 0, first.output
    frame = _check_report(out, 3)
    assert frame["seqlets"].astype(int).gt(0).any()
    for name in ("seqlets.tsv", "cwm.npz", "ppm.npz", "channel_relevance.tsv"):
        assert (out / name).is_file(), name
    relevance = pd.read_csv(out / "channel_relevance.tsv", sep="\t", index_col="id")
    assert relevance.shape == (40, 64)
    second = run("bio", "concepts", fasta, "--out", out, "--top", 2, "--motifs", "none")
    assert second.exit_code == 0, second.output
    again = _check_report(out, 2)
    assert list(again["concept"]) == list(frame["concept"][:2])
    with np.load(out / "cwm.npz") as arrays:
        assert sorted(arrays.files) == sorted(f"filter_{c}" for c in again["concept"])


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    text = result.output.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, result.output
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def test_cli_errors_are_one_line(fasta, tmp_path):
    _one_line_error(run("bio", "concepts", tmp_path / "missing.fa", "--out", tmp_path / "a"), "missing.fa")
    _one_line_error(
        run("bio", "concepts", fasta, "--out", tmp_path / "b", "--layer", "nope", "--motifs", "none"),
        "nope",
        "convolutions",
    )
    _one_line_error(run("bio", "concepts", fasta, "--out", tmp_path / "c", "--top", 0), "--top")


def test_cli_pooling_layer_runs_or_is_one_line_error(fasta, tmp_path):
    result = run("bio", "concepts", fasta, "--out", tmp_path / "d", "--layer", "3", "--top", 2, "--motifs", "none")
    if result.exit_code != 0:
        _one_line_error(result, "3")
