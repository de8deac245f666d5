"""``lrp-domains bench gpu-models`` on a CPU with tiny models: every model measured in float32 and
bfloat16 (or said why not), the relevance it times equals the explainers' own, and the checks it
reports are computed right."""

import math

import pytest
import torch

pytest.importorskip("bpnetlite")
pytest.importorskip("enformer_pytorch")
pytest.importorskip("borzoi_pytorch")
pytest.importorskip("transformers")

from lrp_domains.bench.gpu import models as G  # noqa: E402
from lrp_domains.bench.measure import correlation  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rows():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return G.run(device="cpu", tiny=True, repeats=1)
    finally:
        torch.set_num_threads(threads)


def test_every_model_has_a_float32_and_a_bfloat16_row(rows):
    assert [(r["model"], r["dtype"]) for r in rows] == [(m, d) for m in G.MODELS for d in ("float32", "bfloat16")]
    for row in rows:
        if row["note"]:  # only Borzoi: its own forward is float32-only (its relative positions)
            assert row["model"] == "borzoi" and row["dtype"] == "bfloat16" and "forward fails" in row["note"]
            continue
        assert (
            row["lrp_s"] > 0 and row["gradient_s"] > 0 and math.isclose(row["ratio"], row["lrp_s"] / row["gradient_s"])
        )
        if row["dtype"] == "float32":  # the same device: the batch's first two equal a separate explanation
            assert row["vs_cpu"] < 1e-5
        else:
            assert row["corr_fp32"] > 0.9 and row["gradient_corr_fp32"] > 0.9


def test_the_timed_relevance_is_the_explainers_own():
    from lrp_domains.bio.sequences.explainer import SequenceExplainer

    model, options, length, batch = G.build("enformer", tiny=True)
    sequences = G._random_sequences(batch, length, seed=1)
    timed = G._Bench("enformer", model, options, sequences).explain()
    direct = SequenceExplainer(model, head="human").explain(sequences, target=options["target"]).relevance
    assert torch.equal(timed, direct.float())


def test_the_gradient_is_the_explained_values_gradient():
    model, options, length, batch = G.build("bpnet-counts", tiny=True)
    sequences = G._random_sequences(batch, length, seed=1)
    bench = G._Bench("bpnet-counts", model, options, sequences)
    from lrp_domains.bio.sequences.onehot import one_hot

    onehot = one_hot(sequences).requires_grad_(True)
    model(onehot)[1].sum().backward()  # BPNet's counts head, by hand
    assert torch.allclose(bench.gradient(), onehot.grad)


def test_correlation_by_hand():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 7.0])
    # centred: (-1, 0, 1) and (-7/3, -1/3, 8/3); dot 5, norms sqrt(2) and sqrt(114/9)
    assert math.isclose(correlation(a, b), 5 / math.sqrt(2 * 114 / 9), rel_tol=1e-12)


def test_a_full_run_measures_a_gpu_only():
    with pytest.raises(ValueError, match="--tiny"):
        G.run(device="cpu", tiny=False)


def test_borzois_gradient_reads_its_tracks_first_output():
    model, options, length, batch = G.build("borzoi", tiny=True)
    sequences = G._random_sequences(batch, length, seed=1)
    bench = G._Bench("borzoi", model, options, sequences)
    from lrp_domains.bio.sequences.onehot import one_hot

    onehot = one_hot(sequences).requires_grad_(True)
    model(onehot)[:, 0, 0:4].sum().backward()  # track 0, bins 0-4 of (N, tracks, bins)
    assert torch.allclose(bench.gradient(), onehot.grad)


def test_rotary_tables_stay_float32_with_their_exact_values():
    model = G.build("nt", tiny=True)[0]
    exact = {n: b.clone() for n, b in model.named_buffers() if n.endswith("inv_freq")}
    assert exact  # the NT-like model is rotary
    cast = G.keep_rotary_tables(model.to(torch.bfloat16))
    for name, buffer in cast.named_buffers():
        if name.endswith("inv_freq"):
            assert buffer.dtype == torch.float32 and torch.equal(buffer, exact[name])
