"""Sequences: FASTA, one-hot, SequenceExplainer (lengths, centering, reverse complements),
seqlets, JASPAR matches, modisco/BED exports, logos."""

import gzip

import models as M
import numpy as np
import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.bio import (
    SequenceExplainer,
    annotate_seqlets,
    call_seqlets,
    one_hot,
    plot_logo,
    read_fasta,
    reverse_complement,
    to_bed,
    to_modisco,
)

CTCF = "MA0139.1"


def test_one_hot_soft_masking_n_and_errors():
    x = one_hot(["ACgtN"], n="uniform")
    assert x.shape == (1, 4, 5)
    assert x[0, :, :4].argmax(0).tolist() == [0, 1, 2, 3]
    assert torch.allclose(x[0, :, 4], torch.full((4,), 0.25))
    assert one_hot("ACGTN")[0, :, 4].sum() == 0
    with pytest.raises(ValueError, match=r"chr7: 'Y' at position 3 is an IUPAC ambiguity code"):
        one_hot(["ACYT"], ids=["chr7"])
    with pytest.raises(ValueError, match=r"sequence 0: 'X' at position 2 is not in the alphabet ACGT"):
        one_hot(["AXT"])
    with pytest.raises(ValueError, match="N at position 1"):
        one_hot(["NAC"], n="error")
    with pytest.raises(ValueError, match="different lengths"):
        one_hot(["AC", "ACG"])


def test_reverse_complement():
    x = one_hot(["AACGT"])
    assert torch.equal(reverse_complement(x), one_hot(["ACGTT"]))


def test_read_fasta_plain_and_gzip(tmp_path):
    text = ">a desc\nACGT\nAC\n>b\nttgg\n"
    (tmp_path / "x.fa").write_text(text)
    with gzip.open(tmp_path / "x.fa.gz", "wt") as handle:
        handle.write(text)
    for name in ("x.fa", "x.fa.gz"):
        assert read_fasta(tmp_path / name) == (["a", "b"], ["ACGTAC", "ttgg"])


def _motif_model(consensus: str) -> nn.Sequential:
    """Scores a sequence by its best match to ``consensus`` (a conv filter), then a dense layer."""
    width = len(consensus)
    conv = nn.Conv1d(4, 1, width)
    with torch.no_grad():
        conv.weight.copy_(2 * one_hot([consensus]) - 0.5)
        conv.bias.fill_(-0.5 * width)
    head = nn.Linear(1, 1)
    with torch.no_grad():
        head.weight.fill_(1.0)
        head.bias.fill_(0.1)
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(), head).double().eval()


def _planted(consensus, n=6, length=80, at=30, seed=0):
    rng = np.random.default_rng(seed)
    sequences = ["".join(rng.choice(list("ACGT"), length)) for _ in range(n)]
    return [s[:at] + consensus + s[at + len(consensus) :] for s in sequences]


@pytest.fixture(scope="module")
def ctcf_consensus():
    pytest.importorskip("pyjaspar")
    from pyjaspar import jaspardb

    return str(jaspardb(release="JASPAR2024").fetch_motif_by_id(CTCF).consensus)


def test_explainer_inputs_lengths_and_conservation(tmp_path):
    g = M.seeded(0)
    model = M.cnn1d().double().eval()
    explainer = SequenceExplainer(model, composite="epsilon-plus")
    sequences = ["ACGT" * 8, "GGCA" * 10, "TTAC" * 8]
    result = explainer.explain(sequences)
    assert result.lengths == [32, 40, 32] and result.relevance.shape == (3, 4, 40)
    assert bool((result.relevance[[0, 2], :, 32:] == 0).all())
    alone = explainer.explain(sequences[1:2])
    torch.testing.assert_close(result.relevance[1], alone.relevance[0])
    torch.testing.assert_close(result.delta, result.explained - result.relevance.sum((1, 2)).double())
    (tmp_path / "s.fa").write_text("".join(f">r{i}\n{s}\n" for i, s in enumerate(sequences)))
    from_file = explainer.explain(tmp_path / "s.fa")
    assert from_file.ids == ["r0", "r1", "r2"]
    torch.testing.assert_close(from_file.relevance, result.relevance)
    tensor = one_hot(sequences[:1]).double()
    torch.testing.assert_close(explainer.explain(tensor).relevance[0], result.relevance[0, :, :32])
    frame = result.to_frame()
    assert len(frame) == 32 + 40 + 32 and set(frame.columns) == {"id", "position", "base", "relevance"}
    del g


def test_hypothetical_center_and_rc_average():
    M.seeded(1)
    model = M.cnn1d().double().eval()
    explainer = SequenceExplainer(model)  # genomics composite: z-box input layer
    sequences = _planted("GATAAG", n=4, length=32, at=10)
    plain = explainer.explain(sequences)
    x = plain.onehot.bool()
    # z-box writes every channel; what the observed base's channel got is its hypothetical value
    torch.testing.assert_close(plain.channel_relevance[x], plain.hypothetical[x])
    assert plain.channel_relevance[~x].abs().sum() > 0
    # relevance: the position's total, on the observed base only
    torch.testing.assert_close(plain.relevance.sum(1), plain.channel_relevance.sum(1))
    assert not plain.relevance[~x].any()
    centered = explainer.explain(sequences, center=True)
    units = plain.hypothetical - plain.hypothetical.mean(1, keepdim=True)
    torch.testing.assert_close(centered.hypothetical, units)
    torch.testing.assert_close(centered.relevance, plain.onehot * units)
    averaged = explainer.explain(sequences, rc_average=True)
    reverse = explainer.explain(reverse_complement(plain.onehot), ids=plain.ids)
    torch.testing.assert_close(averaged.relevance, (plain.relevance + reverse_complement(reverse.relevance)) / 2)


def test_seqlets_find_a_planted_motif_and_jaspar_names_it(ctcf_consensus, tmp_path):
    from pyjaspar import jaspardb

    model = _motif_model(ctcf_consensus)
    sequences = _planted(ctcf_consensus, at=30)
    explainer = SequenceExplainer(model, composite="epsilon-plus")
    result = explainer.explain(sequences)
    seqlets = call_seqlets(result)
    assert set(seqlets.id) == set(result.ids)
    for row in seqlets.itertuples():  # each seqlet overlaps the planted site
        assert row.start < 30 + len(ctcf_consensus) and row.end > 30
    database = jaspardb(release="JASPAR2024")
    library = [database.fetch_motif_by_id(i) for i in (CTCF, "MA0035.4", "MA0079.5", "MA0018.4")]
    annotated = annotate_seqlets(seqlets, motifs=library)
    assert set(annotated.motif_id) == {CTCF}
    assert (annotated.match_p < 1e-4).all() and (annotated.motifs_scanned == 4).all()
    bed = to_bed(annotated, tmp_path / "seqlets.bed")
    first = bed.read_text().splitlines()[0].split("\t")
    assert first[0] == result.ids[0] and first[3] == "CTCF" and first[5] in "+-"
    ohe, attr = to_modisco(result, tmp_path / "m_")
    assert np.load(ohe)["arr_0"].shape == (6, 4, 80) and np.load(attr)["arr_0"].shape == (6, 4, 80)
    ax = plot_logo(result, 0, 25, 55)
    assert ax.get_title().startswith(result.ids[0])


def test_seqlets_threshold_controls_calls_on_noise():
    M.seeded(2)
    model = M.cnn1d().double().eval()
    rng = np.random.default_rng(3)
    sequences = ["".join(rng.choice(list("ACGT"), 64)) for _ in range(20)]
    result = SequenceExplainer(model, composite="epsilon-plus").explain(sequences)
    strict, loose = call_seqlets(result, alpha=0.001), call_seqlets(result, alpha=0.2)
    assert len(strict) <= len(loose)
    with pytest.raises(ValueError, match="null must be"):
        call_seqlets(result, null=3)


def test_gene_table(ctcf_consensus):
    model = _motif_model(ctcf_consensus)
    sequences = _planted(ctcf_consensus, n=3)
    result = SequenceExplainer(model, composite="epsilon-plus").explain(sequences, ids=["GENE1", "GENE2", "GENE3"])
    table = result.gene_table(call_seqlets(result))
    assert list(table.gene) == ["GENE1", "GENE2", "GENE3"]
    assert all(isinstance(t, str) and t for t in table.top_seqlets)
    np.testing.assert_allclose(table.explained, result.explained.numpy())


def test_model_unchanged_and_genomics_is_registered():
    assert "genomics" in L.composites.names()
    model = M.cnn1d().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    SequenceExplainer(model).explain(["ACGT" * 8])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_motifs_from_a_jaspar_file(ctcf_consensus, tmp_path):
    from Bio import motifs as bio_motifs
    from pyjaspar import jaspardb

    database = jaspardb(release="JASPAR2024")
    path = tmp_path / "motifs.jaspar"
    path.write_text(bio_motifs.write([database.fetch_motif_by_id(i) for i in (CTCF, "MA0079.5")], "jaspar"))
    model = _motif_model(ctcf_consensus)
    result = SequenceExplainer(model, composite="epsilon-plus").explain(_planted(ctcf_consensus, n=2))
    annotated = annotate_seqlets(call_seqlets(result), motifs=path)
    assert set(annotated.motif_name) == {"CTCF"} and (annotated.motifs_scanned == 2).all()
