"""``lrp-domains bench concepts`` at tiny sizes: structure, sanity, and the naive conditional
relevance (one masked LRP pass per channel) against the batched one."""

import warnings

import pytest
import torch

pytestmark = pytest.mark.slow

pytest.importorskip("pyjaspar")

from lrp_domains.bench.genomics import concepts as B  # noqa: E402


@pytest.fixture(scope="module")
def small_library():
    """The 10 planted JASPAR matrices and 20 others (matching against all 879 takes ~0.2 s a PPM)."""
    from lrp_domains.bench.data.synthetic import MOTIF_IDS
    from lrp_domains.bio.motifs.seqlets import load_motifs

    library = load_motifs("JASPAR2024")
    planted = [m for m in library if m.matrix_id in MOTIF_IDS]
    assert len(planted) == len(MOTIF_IDS)
    return planted + [m for m in library if m.matrix_id not in MOTIF_IDS][:20]


@pytest.mark.parametrize("layer, channel", [("0", 5), ("4", 41)])
def test_naive_and_batched_conditional_relevance_agree(layer, channel):
    from lrp_domains.bio.sequences.synthetic_cnn import load_default_sequence_model
    from lrp_domains.core.latent import explain_concepts

    model = load_default_sequence_model()
    x = B.positive_batch(6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batched = explain_concepts(model, x, layer, [channel, 0], None, "genomics")
        naive = B.naive_conditional(model, x, layer, [channel])
    torch.testing.assert_close(naive[:, 0], batched.conditional[:, 0], rtol=0, atol=1e-5)
    assert batched.conditional[:, 0].abs().max() > 1e-4  # a channel that carries relevance
    # the mask did something: one channel's relevance is not all of it
    assert (naive[:, 0] - batched.relevance).abs().max() > 1e-3


def test_cost_rows():
    rows = B.run_cost(batch=8, repeats=1, naive_repeats=1, warmup=0)
    assert {r["layer"] for r in rows} == set(B.COST_LAYERS)
    for layer in B.COST_LAYERS:
        methods = [r["method"] for r in rows if r["layer"] == layer]
        assert methods[0] == "gradient" and len(methods) == 5
        assert B.CONDITIONAL in methods and B.REPLAY in methods and B.NAIVE in methods
    for row in rows:
        assert row["ms"] > 0 and row["ratio"] > 0 and row["budget"] == 64
        assert row["per_channel"] == pytest.approx(row["ratio"] / 64)
    assert all(r["ratio"] == 1.0 for r in rows if r["method"] == B.GRADIENT)
    assert all(r["naive_vs_lrp"] > 0 for r in rows if r["method"] == B.NAIVE)


def test_naming_rows(small_library, capsys):
    rows = B.run_naming(n=20, shuffles=1, motifs=small_library)
    assert [r["method"].split(" (")[0] for r in rows] == ["filter concepts", "filter weights"]
    for row in rows:
        assert 0 <= row["planted"] <= row["planted_total"] == 10
        assert 0 <= row["families"] <= row["planted_families"] == 9  # CTCF and YY1 share a family
        assert len(row["planted_names"]) == row["planted"] and len(row["family_names"]) == row["families"]
        assert 0 <= row["filters_on_planted"] <= row["filters_matched"] <= row["filters"] == 64
        assert 0 <= row["chance"]["planted"] <= 10 and 0 <= row["chance"]["families"] <= 9
        assert row["seconds"] > 0 and row["match_seconds"] > 0 and row["library"] == 30
    assert rows[0]["reproduced"] is True  # the PPMs rebuilt here are the ones explain_filters matched
    B.print_tables({"cost": _cost_rows(), "naming": rows})
    assert "motif naming" in capsys.readouterr().out


def test_weight_ppms_are_the_baselines(small_library):
    from lrp_domains.bio.concepts.filters import filter_weight_matches, match_ppms
    from lrp_domains.bio.sequences.synthetic_cnn import load_default_sequence_model

    model = load_default_sequence_model()
    ours = match_ppms(B.weight_ppms(model), "ACGT", small_library)
    theirs = filter_weight_matches(model, motifs=small_library)
    assert list(ours["match_id"]) == list(theirs["match_id"])
    assert list(ours["match_p"]) == pytest.approx(list(theirs["match_p"]))


def test_shuffled_keeps_columns():
    ppm = torch.rand(4, 9).double().numpy()
    (out,) = B.shuffled([ppm], seed=0)
    assert sorted(map(tuple, out.T)) == sorted(map(tuple, ppm.T))
    assert B.shuffled([None], seed=0) == [None]


def test_named_counts_families():
    import pandas as pd

    class Motif:
        def __init__(self, matrix_id, family):
            self.matrix_id, self.tf_family = matrix_id, [family]

    library = [Motif("MA0139.2", "zf"), Motif("MA0095.4", "zf"), Motif("MA0035.5", "gata"), Motif("X1", "zf")]
    frame = pd.DataFrame({"best_match": ["yy1", "", "ZNFX"], "match_id": ["MA0095.4", "", "X1"]})
    named = B._named(frame, library)
    assert named["planted_names"] == ["YY1"] and named["family_names"] == ["zf"]
    assert named["filters_matched"] == 2 and named["filters_on_planted"] == 1


def test_cli_lists_the_command():
    from typer.testing import CliRunner

    from lrp_domains.cli import app

    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0 and "concepts" in result.stdout
    result = CliRunner().invoke(app, ["bench", "concepts", "--help"])
    assert result.exit_code == 0 and "--batch" in result.stdout and "--threads" in result.stdout


def _cost_rows():
    common = {"layer": "0", "budget": 64, "batch": 8, "channels": 64, "repeats": 1}
    return [
        {**common, "method": method, "ms": ratio, "ratio": ratio, "per_channel": ratio / 64}
        for method, ratio in ((B.GRADIENT, 1.0), (B.CONDITIONAL, 2.0), (B.NAIVE, 70.0))
    ]
