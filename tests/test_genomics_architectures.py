"""The sequence explainer on the published profile and hybrid architectures: bpnet-lite's BPNet and
ChromBPNet, enformer-pytorch's Enformer, borzoi-pytorch's Borzoi (tiny random-weight instances),
and the genomic targets (profile, counts, track window) with their text form.

For each model: strict mode names no uncovered operation, the explained head inside the scope
equals the model's output outside it, the model comes back unchanged (also after an error), the
targets equal values computed by hand from the output, and relevance is conserved where theory
gives it (bias-free weights: every rule used is conservative then; with biases, biases, BatchNorm
shifts and softplus(0) = log 2 absorb relevance, so only the bias-free variants are checked).
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from models import assert_unchanged, snapshot
from torch import nn
from typer.testing import CliRunner

from lrp_domains.bio import SequenceExplainer, counts_target, parse_sequence_target, profile_target, track_target
from lrp_domains.bio.sequences.targets import CountsTarget, ProfileTarget, TrackTarget, head_output
from lrp_domains.cli import app
from lrp_domains.errors import InputError

BPNET_LENGTH = 160  # trimming 47 + 2 + 4 = 53 for two layers: 54 profile positions


def onehot(n: int, length: int, seed: int) -> torch.Tensor:
    """``(n, 4, length)`` random one-hot DNA."""
    g = torch.Generator().manual_seed(seed)
    return nn.functional.one_hot(torch.randint(0, 4, (n, length), generator=g), 4).permute(0, 2, 1).float()


def _without_biases(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.LayerNorm)) and module.bias is not None:
                module.bias.zero_()
    return model


def tiny_bpnet(controls: int = 2, outputs: int = 2, biases: bool = True) -> nn.Module:
    """A two-layer BPNet with 8 filters (also the CLI's ``--model`` factory)."""
    from bpnetlite.bpnet import BPNet

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BPNet(
            n_filters=8,
            n_layers=2,
            n_outputs=outputs,
            n_control_tracks=controls,
            profile_output_bias=biases,
            count_output_bias=biases,
            verbose=False,
        )
    return (model if biases else _without_biases(model)).eval()


def tiny_chrombpnet(biases: bool = True) -> nn.Module:
    from bpnetlite.chrombpnet import ChromBPNet

    with torch.random.fork_rng():
        torch.manual_seed(1)
        bias_model = tiny_bpnet(controls=0, outputs=1, biases=biases)
        torch.manual_seed(2)
        from bpnetlite.bpnet import BPNet

        accessibility = BPNet(
            n_filters=8,
            n_layers=2,
            n_outputs=1,
            n_control_tracks=0,
            verbose=False,
            profile_output_bias=biases,
            count_output_bias=biases,
        )
        accessibility = accessibility if biases else _without_biases(accessibility)
    return ChromBPNet(bias_model, accessibility).eval()


def tiny_enformer(biases: bool = True) -> nn.Module:
    from enformer_pytorch import Enformer

    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = Enformer.from_hparams(
            dim=24,
            depth=1,
            heads=2,
            attn_dim_key=4,
            num_downsamples=3,
            dim_divisible_by=4,
            target_length=4,
            output_heads=dict(human=5, mouse=3),
        ).eval()
        with torch.no_grad():  # Enformer zero-initialises the attention output: give it weights
            for module in model.modules():
                if isinstance(module, nn.Linear) and not module.weight.any():
                    module.weight.normal_(0, 0.3)
                    if module.bias is not None:
                        module.bias.normal_(0, 0.1)
    return model if biases else _without_biases(model)


@pytest.fixture(scope="module")
def borzoi():
    """A Borzoi with a one-layer transformer of width 16 and 8 tracks (its conv tower is fixed
    at 512-1280 channels), bias-free, weights scaled so that the output is not flat; run once
    so that it caches its relative positions (Borzoi does on its first forward)."""
    from borzoi_pytorch import Borzoi
    from borzoi_pytorch.config_borzoi import BorzoiConfig

    with torch.random.fork_rng():
        torch.manual_seed(4)
        model = Borzoi(
            BorzoiConfig(
                dim=16,
                depth=1,
                heads=2,
                attn_dim_key=4,
                attn_dim_value=8,
                bins_to_return=4,
                return_center_bins_only=True,
            )
        ).eval()
        model.set_track_subset(list(range(8)))
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (nn.Linear, nn.Conv1d)):
                    module.weight.normal_(0, 1.2 / math.sqrt(module.weight[0].numel()))
    model = _without_biases(model)
    x = onehot(2, 256, 5)
    with torch.no_grad():
        model(x)
    return model, x


# -- targets ------------------------------------------------------------------------------------
def test_profile_target_is_softmax_weighted_with_the_softmax_detached():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 7, generator=g, requires_grad=True)
    flat = logits.detach().reshape(3, -1)
    weights = torch.exp(flat) / torch.exp(flat).sum(1, keepdim=True)
    value = profile_target()(logits)
    torch.testing.assert_close(value, (weights * flat).sum(1))
    (grad,) = torch.autograd.grad(value.sum(), logits)  # softmax held constant: the gradient is the softmax
    torch.testing.assert_close(grad.reshape(3, -1), weights)
    strand = logits.detach()[:, 1]
    torch.testing.assert_close(profile_target(strand=1)(logits), (torch.softmax(strand, -1) * strand).sum(1))
    centred = flat - flat.mean(1, keepdim=True)
    torch.testing.assert_close(profile_target(center=True)(logits), (weights * centred).sum(1))


def test_targets_pick_heads_of_tuples_and_dicts():
    profile, counts = torch.randn(2, 2, 5), torch.randn(2, 1)
    torch.testing.assert_close(counts_target()((profile, counts)), counts[:, 0])
    torch.testing.assert_close(profile_target()((profile, counts)), profile_target()(profile))
    tracks = torch.randn(2, 6, 4)  # (N, bins, tracks)
    heads = {"human": tracks, "mouse": torch.randn(2, 6, 2)}
    window = tracks[:, 2:5][..., [1, 3]].sum((1, 2))
    torch.testing.assert_close(track_target([1, 3], (2, 5), head="human")(heads), window)
    torch.testing.assert_close(track_target(1, layout="NCL")(tracks.transpose(1, 2)), tracks[..., 1].sum(1))
    torch.testing.assert_close(head_output("mouse")(heads, None), heads["mouse"])
    with pytest.raises(InputError, match=r"heads \['human', 'mouse'\]; say which one"):
        track_target(0)(heads)
    with pytest.raises(InputError, match="one value per example"):
        counts_target()(profile)  # a profile handed to the counts target is refused, not summed
    with pytest.raises(InputError, match="layout='NCL'"):
        track_target(5)(torch.randn(2, 8, 4))  # track 5 only fits the second axis
    with pytest.raises(InputError, match="outside the output's 6 bins"):
        track_target(0, (4, 9))(tracks)
    with pytest.raises(InputError, match="2 outputs"):
        counts_target(head=2)((profile, counts))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("profile", ProfileTarget(0, None)),
        ("profile:1", ProfileTarget(0, 1)),
        ("Profile strand=0 head=2", ProfileTarget(2, 0)),
        ("counts", CountsTarget(1)),
        ("counts:0 head=3", CountsTarget(3, 0)),
        ("track 12, bins 400-420", TrackTarget(12, (400, 420))),
        ("track=12:400-420", TrackTarget(12, (400, 420))),
        ("track=3,5", TrackTarget([3, 5])),
        ("tracks 3,5 bins 0-10 head=human layout=NCL", TrackTarget([3, 5], (0, 10), "human", "NCL")),
    ],
)
def test_parse_sequence_target(text, expected):
    assert repr(parse_sequence_target(text)) == repr(expected)


def test_parse_sequence_target_integers_and_errors():
    assert parse_sequence_target("7") == 7 and parse_sequence_target(3) == 3 and parse_sequence_target(None) is None
    heads = {"human": torch.randn(2, 3, 4), "mouse": torch.randn(2, 3, 2)}
    torch.testing.assert_close(parse_sequence_target("5 head=mouse")(heads), heads["mouse"].reshape(2, -1)[:, 5])
    with pytest.raises(InputError, match="out of range for head 'mouse' with 6 values"):
        parse_sequence_target("6 head=mouse")(heads)
    for bad, message in [
        ("bogus", "not understood"),
        ("track", "not understood"),
        ("track=1:5-2", "start < end"),
        ("profile layout=NCL", "does not apply"),
        ("", "empty"),
        ("track=1 layout=XYZ", "layout"),
        ("3 strand=1", "does not apply"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_sequence_target(bad)


# -- BPNet / ChromBPNet -------------------------------------------------------------------------
def test_bpnet_targets_equal_the_outputs_and_the_model_is_unchanged():
    model = tiny_bpnet()
    x = onehot(3, BPNET_LENGTH, 0)
    profile, counts = model(x, torch.zeros(3, 2, BPNET_LENGTH))  # bpnet-lite's own call, zero controls
    before = snapshot(model)
    explainer = SequenceExplainer(model, strict=True)
    flat = profile.detach().reshape(3, -1)
    for target, expected, head in [
        (profile_target(), (torch.softmax(flat, 1) * flat).sum(1), profile),
        ("profile:1", (torch.softmax(profile[:, 1], 1) * profile[:, 1]).sum(1), profile),
        (counts_target(), counts[:, 0], counts),
        ("track=1:0-3 head=0", profile[:, 1, 0:3].sum(1), profile),  # profiles are (N, strands, positions)
    ]:
        result = explainer.explain(x, target=target)
        torch.testing.assert_close(result.explained, expected.detach().double())
        torch.testing.assert_close(result.output, head.detach())  # inside the scope == outside
        assert result.relevance.shape == (3, 4, BPNET_LENGTH) and result.hypothetical.shape == (3, 4, BPNET_LENGTH)
    assert_unchanged(before, snapshot(model))
    with pytest.raises(InputError, match="2 outputs"):
        explainer.explain(x, target=counts_target(head=4))
    assert_unchanged(before, snapshot(model))


@pytest.mark.parametrize("composite", ["genomics", "epsilon"])
def test_bias_free_bpnet_conserves_relevance(composite):
    model = tiny_bpnet(biases=False)
    x = onehot(2, BPNET_LENGTH, 1)
    explainer = SequenceExplainer(model, composite=composite, strict=composite == "genomics")
    for target in (profile_target(), counts_target()):
        result = explainer.explain(x, target=target)
        total = result.channel_relevance.sum((1, 2)).double()
        torch.testing.assert_close(total, result.explained, rtol=1e-4, atol=1e-6)
    # With biases they absorb relevance: the delta is what the theory says it is, not zero.
    biased = SequenceExplainer(tiny_bpnet(), composite=composite).explain(x, target=counts_target())
    assert biased.delta.abs().max() > 1e-3


def test_chrombpnet_counts_combine_both_models_and_conserve():
    model = tiny_chrombpnet(biases=False)
    x = onehot(2, BPNET_LENGTH, 2)
    acc_profile, acc_counts = model.accessibility(x)
    bias_profile, bias_counts = model.bias(x)
    before = snapshot(model)
    explainer = SequenceExplainer(model, strict=True)
    counts = explainer.explain(x, target=counts_target())
    expected = torch.log(torch.exp(acc_counts) + torch.exp(bias_counts))[:, 0]
    torch.testing.assert_close(counts.explained, expected.detach().double())
    # log(exp(a) + exp(b)) with the identity rule on exp and log: each model gets its softmax share.
    torch.testing.assert_close(counts.channel_relevance.sum((1, 2)).double(), counts.explained, rtol=1e-4, atol=1e-6)
    profile = explainer.explain(x, target=profile_target())
    logits = (acc_profile + bias_profile).detach()[:, 0]
    torch.testing.assert_close(profile.explained, (torch.softmax(logits, 1) * logits).sum(1).double())
    torch.testing.assert_close(profile.channel_relevance.sum((1, 2)).double(), profile.explained, rtol=1e-4, atol=1e-6)
    assert_unchanged(before, snapshot(model))


# -- Enformer -------------------------------------------------------------------------------------
def test_enformer_track_window_channels_last_and_heads():
    model = tiny_enformer()
    x = onehot(2, 64, 3)
    out = model(x.transpose(1, 2))  # Enformer takes (N, L, 4)
    before = snapshot(model)
    explainer = SequenceExplainer(model, strict=True)
    assert explainer.architecture.layout == "NLC"
    result = explainer.explain(x, target=track_target(2, (1, 3), head="human"))
    torch.testing.assert_close(result.explained, out["human"][:, 1:3, 2].sum(1).detach().double())
    torch.testing.assert_close(result.output, out["human"].detach())
    # The z-box input layer still sees the tracked input through the transposes: absent bases get relevance.
    assert (result.channel_relevance * (1 - x)).abs().sum() > 0
    indexed = SequenceExplainer(model, head="mouse", strict=True).explain(x, target=5)
    torch.testing.assert_close(indexed.explained, out["mouse"].reshape(2, -1)[:, 5].detach().double())
    assert_unchanged(before, snapshot(model))
    with pytest.raises(InputError, match="heads"):
        explainer.explain(x, target=track_target(0, head="rat"))
    assert_unchanged(before, snapshot(model))


def test_bias_free_enformer_conserves_relevance():
    model = tiny_enformer(biases=False).double()
    x = onehot(2, 64, 4).double()
    result = SequenceExplainer(model, strict=True).explain(x, target="track=1:0-4 head=mouse")
    torch.testing.assert_close(result.channel_relevance.sum((1, 2)).double(), result.explained, rtol=1e-3, atol=1e-6)


def test_other_composites_name_what_they_do_not_cover_and_leave_the_model_unchanged():
    from lrp_domains.core.engine.coverage import LRPCoverageError

    model = tiny_enformer()
    before = snapshot(model)
    with pytest.raises(LRPCoverageError, match="softmax.*AttentionPool|AttentionPool.*softmax"):
        SequenceExplainer(model, composite="epsilon", strict=True).explain(
            onehot(1, 64, 5), target="track=0 head=human"
        )
    assert_unchanged(before, snapshot(model))


# -- Borzoi ---------------------------------------------------------------------------------------
def test_borzoi_tracks_first_layout_conservation_and_unchanged(borzoi):
    model, x = borzoi
    with torch.no_grad():
        out = model(x)  # (N, tracks, bins)
    before = snapshot(model)
    explainer = SequenceExplainer(model, strict=True)
    assert explainer.architecture.track_layout == "NCL"
    result = explainer.explain(x, target=track_target(5, (1, 3)))
    # BatchNorms merged into the convolutions before them compute the same values to float32 rounding
    torch.testing.assert_close(result.explained, out[:, 5, 1:3].sum(1).double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(result.output, out)
    # Bias-free and with fresh BatchNorm statistics (no shift): conserved.
    torch.testing.assert_close(result.channel_relevance.sum((1, 2)).double(), result.explained, rtol=1e-3, atol=1e-5)
    assert_unchanged(before, snapshot(model))
    with pytest.raises(InputError, match="out of range"):
        explainer.explain(x, target=track_target(8))
    assert_unchanged(before, snapshot(model))


# -- CLI and runs ---------------------------------------------------------------------------------
def test_sequences_command_target_profile(tmp_path):
    x = onehot(3, BPNET_LENGTH, 6)
    letters = np.array(list("ACGT"))[x.argmax(1).numpy()]
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">s{i}\n{''.join(row)}\n" for i, row in enumerate(letters)))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "bio",
            "sequences",
            str(fasta),
            "--out",
            str(out),
            "--model",
            "test_genomics_architectures:tiny_bpnet",
            "--target",
            "profile",
            "--motifs",
            "none",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out / "relevance.parquet")
    expected = SequenceExplainer(tiny_bpnet()).explain(x, target=profile_target())
    np.testing.assert_allclose(
        table.groupby("id", sort=True)["relevance"].sum().to_numpy(),
        expected.per_position.sum(1).numpy(),
        rtol=1e-4,
        atol=1e-6,
    )
    bad = CliRunner().invoke(
        app,
        [
            "bio",
            "sequences",
            str(fasta),
            "--out",
            str(tmp_path / "o"),
            "--model",
            "test_genomics_architectures:tiny_bpnet",
            "--target",
            "track=1:9-3",
            "--motifs",
            "none",
            "--no-progress",
        ],
    )
    assert bad.exit_code != 0 and "start < end" in bad.output


def test_run_options_take_target_text():
    model = tiny_bpnet()
    explainer = SequenceExplainer(model)
    explainer.check_options({"target": "counts"})
    with pytest.raises(InputError, match="not understood"):
        explainer.check_options({"target": "countz"})
    x = onehot(2, BPNET_LENGTH, 7)
    letters = ["".join(np.array(list("ACGT"))[row]) for row in x.argmax(1).numpy()]
    rows = explainer.explain_batch(["a", "b"], letters, target="counts")
    torch.testing.assert_close(rows.explained, explainer.explain(x, target=counts_target()).explained)


# -- the new rules, against hand-computed relevance --------------------------------------------------
def test_layer_norm_rule_holds_the_standard_deviation_constant():
    import lrp_domains as L
    from lrp_domains.bio.architectures.rules import DetachedStdNorm

    g = torch.Generator().manual_seed(8)
    norm = nn.LayerNorm(6).double()
    with torch.no_grad():
        norm.weight.copy_(torch.rand(6, generator=g, dtype=torch.double) + 0.5)
        norm.bias.copy_(torch.randn(6, generator=g, dtype=torch.double))
    x, c = torch.randn(3, 6, generator=g, dtype=torch.double), torch.randn(6, generator=g, dtype=torch.double)
    result = L.explain(
        norm, x, target=lambda out: out @ c, composite=L.Composite({nn.LayerNorm: DetachedStdNorm()}), strict=True
    )
    std = torch.sqrt(x.var(1, unbiased=False, keepdim=True) + norm.eps)
    scaled = norm.weight.detach() * c / std  # the gradient of the linear map (x - mean) / std * w
    torch.testing.assert_close(result.relevance, x * (scaled - scaled.mean(1, keepdim=True)))
    # Conserved up to the bias: sum R_x = sum (y - b) c.
    torch.testing.assert_close(result.relevance.sum(1), (norm(x) - norm.bias).detach() @ c)


@pytest.mark.parametrize("softmax", ["detach", "gradient"])
def test_enformer_attention_pooling_rule(softmax):
    """CP-LRP (softmax held constant): relevance of x_p is attn_p x_p, conserved. AttnLRP: the
    softmax keeps its gradient and x * attn gets the uniform rule: x_p receives attn_p x_p / 2."""
    import lrp_domains as L
    from lrp_domains.bio.composites import genomics

    pool = tiny_enformer().stem[2].double()
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 12, 8, generator=g, dtype=torch.double)
    composite = L.Composite(functional=genomics(softmax=softmax).functional)
    result = L.explain(pool, x, target=lambda out: out.sum((1, 2)), composite=composite, strict=True)
    windows = x.reshape(2, 12, 4, 2).requires_grad_(True)
    logits = pool.to_attn_logits(windows)
    attn = torch.softmax(logits.detach(), -1)
    if softmax == "detach":
        torch.testing.assert_close(result.relevance, (windows * attn).detach().reshape(2, 12, 8))
        return
    # By hand: the value path's gradient is attn / 2; the logits get the softmax's gradient of
    # the half of the relevance that x * attn sends to attn, g_l = a (x / 2 - sum_p a_p x_p / 2).
    half = windows.detach() / 2
    g_logits = attn * (half - (attn * half).sum(-1, keepdim=True))
    (g_logit_path,) = torch.autograd.grad(logits, windows, g_logits)
    expected = windows.detach() * (attn / 2 + g_logit_path)
    torch.testing.assert_close(result.relevance, expected.reshape(2, 12, 8), rtol=1e-4, atol=1e-6)  # eps at l ~ 0
