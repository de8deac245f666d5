"""``lrp-domains bench genomics-models``: profile data, the one-hot k-mer front end, DeepLiftShap
conventions, the scoring and the command on tiny settings."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from lrp_domains.bench.data import profiles as P
from lrp_domains.bench.data.synthetic import make_dataset, motif_ppms
from lrp_domains.bench.genomics import models as G
from lrp_domains.errors import InputError


def test_profile_peaks_sit_on_the_planted_motifs():
    data = make_dataset(6, seed=5, positive_fraction=0.5, motifs_per_sequence=(1, 1))
    sigma, shift, background = 4.0, 3.0, 0.02
    intensity = P.profile_intensity(data, sigma=sigma, shift=shift, background=background).double()
    strengths = P.motif_strengths()
    widths = {m: ppm.shape[1] for m, (_, ppm) in motif_ppms().items()}
    for i, planted in enumerate(data.placements):
        if not planted:  # negatives: flat background
            assert torch.allclose(intensity[i], torch.full_like(intensity[i], background))
            continue
        (site,) = planted
        centre = site.start + (widths[site.motif_id] - 1) / 2
        # Plus strand peaks `shift` upstream of the motif's centre, minus strand `shift` downstream.
        for strand, expected in ((0, centre - shift), (1, centre + shift)):
            top = int(intensity[i, strand].argmax())
            assert abs(top - expected) <= 0.5, (i, strand, top, expected)
        # All the motif's reads are in the profile: strength + background on both strands.
        assert float(intensity[i].sum()) == pytest.approx(strengths[site.motif_id] + 2 * 200 * background, rel=1e-5)


def test_profile_counts_are_seeded_poisson_and_truth_follows_signal_kinds():
    data = make_dataset(40, seed=6)
    a, b = P.make_profile_data(data, seed=1), P.make_profile_data(data, seed=1)
    assert torch.equal(a.counts, b.counts)
    assert torch.equal(a.counts, a.counts.round()) and a.counts.min() >= 0
    assert torch.equal(a.log_total.squeeze(1), torch.log1p(a.counts.sum((1, 2))))
    assert torch.equal(P.signal_truth(a), data.truth)
    kind = data.placements[int(data.labels.argmax())][0].motif_id
    only = P.make_profile_data(data, signal_motifs=(kind,), seed=1)
    truth = P.signal_truth(only)
    for i, planted in enumerate(data.placements):
        expected = torch.zeros(200, dtype=torch.bool)
        for site in planted:
            if site.motif_id == kind:
                width = motif_ppms([kind])[kind][1].shape[1]
                expected[site.start : site.start + width] = data.truth[i, site.start : site.start + width]
        assert torch.equal(truth[i], expected)
    with pytest.raises(InputError, match="unknown signal motifs"):
        P.profile_intensity(data, signal_motifs=("MA9999.1",))


def test_a_few_epochs_lower_the_held_out_profile_loss():
    train = P.make_profile_data(make_dataset(100, seed=7), seed=7)
    valid = P.make_profile_data(make_dataset(40, seed=8), seed=8)
    torch.manual_seed(0)
    untrained = P.evaluate_profile_model(P.build_profile_model(8, 2), valid)
    model, record = P.train_profile_model(train, n_filters=8, n_layers=2, epochs=2, validation=valid)
    assert not model.training
    assert record["fit"]["profile_mnll"] < untrained.profile_mnll
    assert record["count_loss_weight"] == pytest.approx(float(train.counts.sum((1, 2)).median()) / 10)


def test_bpnet_cache_loads_without_retraining(tmp_path):
    settings = dict(G.SETTINGS["quick"]["bpnet"], n_train=40, n_validation=20)
    lines = []
    first, record = G.bpnet_model(tmp_path, settings, lines.append)
    second, again = G.bpnet_model(tmp_path, settings, lines.append)
    assert len(lines) == 1 and list(tmp_path.glob("bpnet-*.safetensors"))
    assert record == again
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    # Every method of both cases leaves the model as it was (eval mode, weights, no hooks left).
    data = make_dataset(4, seed=12, length=40, positive_fraction=1.0, motifs_per_sequence=(1, 1))
    cases = G.bpnet_cases(first, data.onehot, data.truth, ig_steps=2, shuffles=2, fit=record)
    for case in cases:
        rows = G.score_case(case, repeats=1)
        assert [row["method"] for row in rows][-1] == "deep_lift_shap" and len(rows) == 6
    assert not any(module.training for module in first.modules())
    assert not any(module._forward_hooks or module._backward_hooks for module in first.modules())
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def _token_model(k: int):
    from lrp_domains.bench.data.nt_like import build_nt_like
    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(k)
    model = build_nt_like(tokenizer, hidden_size=16, layers=1, heads=2, seed=3)
    with torch.no_grad():  # a random head gives logits near 0: make them large enough to compare
        model.classifier.out_proj.weight.mul_(50)
        model.get_input_embeddings().weight.normal_(0, 1, generator=torch.Generator().manual_seed(0))
    return model, tokenizer


@pytest.mark.parametrize("k", [3, 6])
def test_one_hot_front_end_gives_the_token_models_logits(k):
    from lrp_domains.bench.data.nt_like import predict

    model, tokenizer = _token_model(k)
    # 47 bases = 7 * 6 + 5 = 15 * 3 + 2: leftover single-base tokens after the k-mers.
    data = make_dataset(5, seed=9, length=47, motifs_per_sequence=(1, 1))
    expected = predict(model, tokenizer, data.sequences)
    assert expected.abs().max() > 0.1
    wrapped = G.OneHotKmerModel(model, tokenizer)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with torch.no_grad():
        looked_up = wrapped(data.onehot)
    differentiable = wrapped(data.onehot)
    torch.testing.assert_close(looked_up, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(differentiable.detach(), expected, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(before[n], v) for n, v in model.state_dict().items())
    # The k-mer detectors: only the observed k-mer's unit is active (pre-activation 1, every other <= 0), so
    # the gradient reaches only observed bases, the same value for the k bases of one k-mer.
    leaf = data.onehot.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(wrapped(leaf)[:, 1].sum(), leaf)
    whole = 47 // k * k
    assert torch.all(grad[:, :, :whole][data.onehot[:, :, :whole] == 0] == 0)
    observed = (grad * data.onehot).sum(1)[:, :whole].reshape(5, -1, k)
    torch.testing.assert_close(observed, observed[:, :, :1].expand_as(observed))
    assert observed.abs().max() > 0


def test_one_hot_front_end_rejects_bad_input():
    from lrp_domains.bench.data.nt_like import build_nt_like
    from lrp_domains.bio.dna_lm.tokenizers import bpe_tokenizer

    tokenizer = bpe_tokenizer(["ACGTACGTAAAACCCGGGTTT"] * 4, vocab_size=40)
    with pytest.raises(InputError, match="k-mer tokenizer"):
        G.OneHotKmerModel(build_nt_like(tokenizer, hidden_size=16, layers=1, heads=2), tokenizer)
    model, kmers = _token_model(3)
    with pytest.raises(InputError, match="one-hot DNA"):
        G.OneHotKmerModel(model, kmers)(torch.zeros(2, 5, 30))


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.relu, self.linear = nn.Conv1d(4, 6, 5), nn.ReLU(), nn.Linear(6 * 26, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.relu(self.conv(x)).flatten(1))


def test_deep_lift_shap_sums_to_output_minus_mean_reference_output():
    from tangermeme.deep_lift_shap import deep_lift_shap

    model = _Tiny().double()
    x = make_dataset(3, seed=10, length=30, motifs_per_sequence=(1, 1)).onehot.double()
    scores, delta = G.deep_lift_shap_scores(model, x, target=1, shuffles=4, seed=0)
    found = deep_lift_shap(model, x, target=1, n_shuffles=4, random_state=0, device="cpu", return_references=True)
    torch.testing.assert_close(scores, found.attributions)
    assert torch.all(scores[x == 0] == 0)  # observed bases only
    with torch.no_grad():
        mean_reference = torch.stack([model(found.references[:, j])[:, 1] for j in range(4)], 1).mean(1)
        expected = model(x)[:, 1] - mean_reference
    torch.testing.assert_close(scores.sum((1, 2)), expected, rtol=1e-6, atol=1e-8)
    assert delta == 0.0  # a conv-ReLU-linear model: the rescale rule is exact, no warning


def test_scores_against_hand_computed_auroc_and_aupr():
    truth = torch.tensor([[True, False, True, False, False]])
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0, -1.0]])
    case = G.Case("hand", {"fixed": lambda: scores}, lambda: torch.zeros(1), truth, ("fixed",))
    (row,) = G.score_case(case, repeats=2)
    # Positives 2 and 1 each outrank 2 of the 3 negatives; precision at the positives: 1/2, 2/3.
    assert row["AUROC"] == pytest.approx(4 / 6)
    assert row["AUPR"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert row["seconds"] >= 0 and row["cost"] > 0


def test_verdict_compares_the_best_of_ours_with_deep_lift_shap():
    rows = [
        {"case": "c", "method": "ours: a", "AUROC": 0.80, "cost": 1.0},
        {"case": "c", "method": "ours: b", "AUROC": 0.90, "cost": 2.0},
        {"case": "c", "method": "deep_lift_shap", "AUROC": 0.85, "cost": 40.0},
    ]
    found = G.verdict(rows, ("ours: a", "ours: b"))
    assert found["ours"] == "ours: b" and found["AUROC difference"] == pytest.approx(0.05)
    assert found["cost ratio"] == pytest.approx(0.05) and found["met"]
    rows[2]["cost"] = 10.0
    assert not G.verdict(rows, ("ours: a", "ours: b"))["met"]
    assert G.verdict(rows[:2], ("ours: a",)) is None
    assert G.verdict(rows, ("ours: b",))["AUROC difference s.e."] is None
    # Paired over sequences: differences 0.2 and 0.0 (a NaN sequence skipped): s.e. = std / sqrt(2) = 0.1.
    rows[1]["per_sequence_AUROC"] = torch.tensor([0.9, 0.8, float("nan")], dtype=torch.float64)
    rows[2]["per_sequence_AUROC"] = torch.tensor([0.7, 0.8, float("nan")], dtype=torch.float64)
    assert G.verdict(rows, ("ours: b",))["AUROC difference s.e."] == pytest.approx(0.1)


def test_command_runs_on_tiny_settings(tmp_path):
    from typer.testing import CliRunner

    from lrp_domains.cli import app

    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(
            app, ["bench", "genomics-models", "--quick", "--n", "8", "--cache-dir", str(tmp_path), "--models", "bpnet"]
        )
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    for case in ("BPNet-like, profile", "BPNet-like, counts"):
        assert re.search(
            rf"{case}: ours: (genomics|epsilon) vs deep_lift_shap: AUROC [+-]\d\.\d{{3}} \(paired "
            r"s\.e\. \d\.\d{3}\), cost "
            r"\d+\.\d{3}x DeepLiftShap's -> target (met|NOT met)",
            result.output,
        ), result.output
    assert "training the BPNet-like model" in result.output
    bad = CliRunner().invoke(app, ["bench", "genomics-models", "--n", "1", "--cache-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "--n must be at least 2" in bad.output


def test_nt_case_rows_cover_every_method_on_a_tiny_token_model():
    model, tokenizer = _token_model(3)
    data = make_dataset(6, seed=11, length=40, positive_fraction=1.0, motifs_per_sequence=(1, 1))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    case = G.nt_case(model, tokenizer, data.onehot, data.sequences, data.truth, ig_steps=2, shuffles=2, fit={})
    rows = G.score_case(case, repeats=1)
    assert [row["method"] for row in rows] == [
        "ours: attnlrp",
        "ours: cp-lrp",
        "gradient x input",
        "integrated gradients",
        "ism",
        "deep_lift_shap",
    ]
    assert all(0.0 <= row["AUROC"] <= 1.0 and row["cost"] > 0 for row in rows)
    assert all(torch.equal(before[n], v) for n, v in model.state_dict().items())
    assert not model.training
    # Our relevance is the TokenSequenceExplainer's, read at the observed bases.
    from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer

    expected = (
        TokenSequenceExplainer(model, tokenizer, composite="attnlrp")
        .explain(data.sequences, target=1, hypothetical=False)
        .relevance.sum(1)
    )
    torch.testing.assert_close(case.methods["ours: attnlrp"](), expected)
