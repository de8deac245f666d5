"""The runnable workflows in text/ and bio/: each run offline on small inputs, outputs checked
against an independent computation (direct explainer calls, rankings and overlaps recomputed here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

from lrp_domains.bench.data.synthetic import motif_ppms, read_synthetic_fasta
from lrp_domains.data import datasets_dir, example_sentences
from lrp_domains.text import TextExplainer

pytestmark = pytest.mark.workflow

ROOT = Path(__file__).resolve().parents[1]


def _script(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sentiment_attribution_matches_direct_explanations(tmp_path):
    sentences = example_sentences()
    data = tmp_path / "reviews.tsv"
    # the data card: alternating, positive first
    pd.DataFrame({"text": sentences, "label": [1 - i % 2 for i in range(len(sentences))]}).to_csv(
        data, sep="\t", index=False
    )
    out = tmp_path / "out"
    written = _script("workflows/text/sentiment_attribution.py").main(
        ["--data", str(data), "--out", str(out), "--shard-size", "5"]
    )
    explainer = TextExplainer.default()
    direct = explainer.explain(sentences)
    words = pd.read_parquet(written["words"])
    for row, result in enumerate(direct):
        mine = words[words.row == row]
        assert mine.word.tolist() == result.words
        np.testing.assert_allclose(mine.relevance, result.word_relevance.numpy(), rtol=1e-4, atol=1e-6)
        assert set(mine.prediction) == {result.prediction}
    gold = ["positive" if i % 2 == 0 else "negative" for i in range(len(sentences))]
    wrong = [i for i, result in enumerate(direct) if result.prediction != gold[i]]
    assert sorted(pd.read_csv(written["errors"]).row) == wrong
    top = pd.read_csv(written["top_words"])
    assert set(top.predicted_class) == {r.prediction for r in direct}
    html = written["report"].read_text()
    assert "Top words per predicted class" in html and "Accuracy against the gold labels" in html
    # a second run resumes: the shards are not rewritten
    shards = sorted((out / "run").glob("shard-*.parquet"))
    assert len(shards) == 4
    stamps = [p.stat().st_mtime_ns for p in shards]
    _script("workflows/text/sentiment_attribution.py").main(
        ["--data", str(data), "--out", str(out), "--shard-size", "5"]
    )
    assert [p.stat().st_mtime_ns for p in shards] == stamps


def test_motif_report_recovery_recomputed(tmp_path):
    pytest.importorskip("pyjaspar")
    fasta = datasets_dir() / "example_sequences.fa"
    written = _script("workflows/bio/motif_report.py").main([str(fasta), "--out", str(tmp_path)])
    seqlets = pd.read_csv(written["seqlets"], keep_default_na=False, na_values=[""])
    positive = seqlets[seqlets.sign == "positive"]
    # motif table = counts of best matches among positive seqlets
    counts = positive.motif_id.dropna().value_counts()
    motifs = pd.read_csv(written["motifs"])
    assert dict(zip(motifs.motif_id, motifs.seqlets)) == counts.to_dict()
    # planted motifs, recomputed position by position
    data = read_synthetic_fasta(fasta)
    width = {m: ppm.shape[1] for m, (_, ppm) in motif_ppms().items()}
    expected = []
    for seq_id, placements in zip(data.ids, data.placements):
        for p in placements:
            motif = set(range(p.start, p.start + width[p.motif_id]))
            hits = [
                s
                for s in positive[positive.id == seq_id].itertuples()
                if 2 * len(motif & set(range(s.start, s.end))) >= len(motif)
            ]
            expected.append((seq_id, p.motif_id, bool(hits), any(s.motif_id == p.motif_id for s in hits)))
    planted = pd.read_csv(written["planted"])
    assert list(zip(planted.id, planted.motif_id, planted.found, planted.named)) == expected
    # real behaviour: seqlets cover ~5% of the bases, yet find far more of the planted motifs
    covered = sum(s.end - s.start for s in positive.itertuples()) / sum(len(s) for s in data.sequences)
    assert covered < 0.1 and planted.found.mean() > 3 * covered
    assert "Planted motifs" in written["motif_report"].read_text()


def test_gene_importance_rankings_recomputed(tmp_path):
    pytest.importorskip("scanpy")
    from lrp_domains.bio.cells.pbmc_mlp import held_out_cells, load_default_data, markers_in

    written = _script("workflows/bio/gene_importance.py").main(["--out", str(tmp_path), "--top", "10"])
    relevance = pd.read_parquet(written["relevance"])
    cells = held_out_cells()
    assert list(relevance.index) == cells
    labels = load_default_data()[cells].obs["bulk_labels"].astype(str)
    flagged = pd.read_csv(written["top10_markers"])
    markers = markers_in(relevance.columns)
    for group, rows in flagged.groupby("group"):
        mean = relevance[(labels == group).to_numpy()].mean()
        assert rows.sort_values("rank").gene.tolist() == mean.sort_values(ascending=False).index[:10].tolist()
        assert rows.known_marker.tolist() == [g in markers.get(group, ()) for g in rows.sort_values("rank").gene]
    stored = anndata.read_h5ad(written["h5ad"])
    layer = pd.DataFrame(stored.layers["lrp"], index=stored.obs_names, columns=stored.var_names)
    np.testing.assert_allclose(layer[relevance.columns].to_numpy(), relevance.to_numpy(), rtol=1e-6, atol=1e-7)
    others = [g for g in stored.var_names if g not in set(relevance.columns)]
    assert not others or (layer[others].to_numpy() == 0).all()


# -- workflows/bio/modisco_motifs.py: everything but the modisco program itself (not a dependency) ---------------
def _planted(ppm: np.ndarray, left: int, right: int) -> np.ndarray:
    return np.vstack([np.full((left, 4), 0.25), ppm, np.full((right, 4), 0.25)])


def test_modisco_pattern_matching_on_hand_made_patterns(tmp_path):
    h5py = pytest.importorskip("h5py")
    script = _script("workflows/bio/modisco_motifs.py")
    known = script.known_motifs(None)
    assert len(known) == 10 and all(np.allclose(p.sum(1), 1) for p in known.values())
    ctcf, rest = known["MA0139.2 CTCF"], known["MA0138.3 REST"]
    # a reverse-complemented CTCF inside flat flanks: matched exactly, on the minus strand
    name, strand, r = script.best_match(_planted(ctcf[::-1, ::-1], 7, 9), known)
    assert (name, strand) == ("MA0139.2 CTCF", "-") and r == pytest.approx(1.0)
    # trimming keeps the span whose contribution reaches 25% of the peak
    contributions = np.zeros((30, 4))
    contributions[10:18, 0] = [0.3, 1, 2, 4, 4, 2, 1, 0.5]
    assert len(script.trim(np.zeros((30, 4)), contributions)) == 6
    # a file laid out as tfmodisco-lite writes it
    with h5py.File(tmp_path / "modisco.h5", "w") as handle:
        for index, (ppm, n) in enumerate([(rest, 40), (ctcf, 12)]):
            group = handle.create_group(f"pos_patterns/pattern_{index}")
            group["sequence"] = _planted(ppm, 5, 5)
            group["contrib_scores"] = _planted(ppm, 5, 5) * np.r_[np.zeros(5), np.ones(len(ppm)), np.zeros(5)][:, None]
            group.create_group("seqlets")["n_seqlets"] = np.array([n])
    table = script.pattern_table(tmp_path / "modisco.h5", known)
    assert table.best_match.tolist() == ["MA0138.3 REST", "MA0139.2 CTCF"]
    assert table.seqlets.tolist() == [40, 12] and table.width.tolist() == [len(rest), len(ctcf)]
    assert (table.correlation > 0.999).all()


def test_known_motifs_from_a_jaspar_file(tmp_path):
    script = _script("workflows/bio/modisco_motifs.py")
    path = tmp_path / "one.jaspar"
    path.write_text(">MA9999.1 TOY\nA [ 8 0 0 ]\nC [ 0 4 0 ]\nG [ 0 4 0 ]\nT [ 0 0 8 ]\n")
    ((name, ppm),) = script.known_motifs(str(path)).items()
    assert name == "MA9999.1 TOY"
    np.testing.assert_allclose(ppm, [[1, 0, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0, 1]])


def test_modisco_workflow_without_modisco_says_what_to_run(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match=r"(?s)pip install modisco-lite.*modisco motifs -s .*ohe.npy -a .*attr.npy"):
        _script("workflows/bio/modisco_motifs.py").main(["--out", str(tmp_path), "--n", "20"])
    assert np.load(tmp_path / "ohe.npy").shape == (20, 4, 200)
    assert np.load(tmp_path / "attr.npy").shape == (20, 4, 200)


# -- workflows/bio/single_cell_models.py: scANVI and the gene transformer, quick settings ----------------------
def test_single_cell_models_reports_recomputed_from_the_saved_models(tmp_path):
    pytest.importorskip("scvi")
    from lrp_domains.bio.cells import scvi_models
    from lrp_domains.bio.cells.gene_transformer import TrainedGeneTransformer
    from lrp_domains.bio.cells.pbmc_mlp import load_default_data, markers_in

    results = _script("workflows/bio/single_cell_models.py").main(["--out", str(tmp_path), "--quick", "--top", "10"])
    adata = load_default_data()
    for name in ("scanvi", "gene-transformer"):
        stored = anndata.read_h5ad(results[name]["h5ad"])
        layer = pd.DataFrame(stored.layers["lrp"], index=stored.obs_names, columns=stored.var_names)
        cells = list(stored.obs_names)
        labels = adata[cells].obs["bulk_labels"].astype(str).tolist()
        if name == "scanvi":  # reload from the safetensors cache (no training: the same settings)
            counts = scvi_models.pbmc_counts(adata)
            model = scvi_models.load_or_train(
                tmp_path / name / "model", counts, held_out=cells, n_latent=10, n_hidden=64, max_epochs=20, seed=0
            )
            direct = scvi_models.explainer(model, "epsilon").explain(counts[cells], target=labels)
        else:
            trained = TrainedGeneTransformer.load(tmp_path / name / "model")
            assert trained.test_cells == cells
            direct = trained.explainer("attnlrp").explain(adata[cells], target=labels)
        genes = list(direct.relevance.columns)
        np.testing.assert_allclose(layer[genes].to_numpy(), direct.relevance.to_numpy(), rtol=1e-4, atol=1e-6)
        others = [g for g in stored.var_names if g not in set(genes)]
        assert not others or (layer[others].to_numpy() == 0).all()
        overlap = direct.marker_overlap(markers_in(genes))
        assert results[name]["markers@20"] == pytest.approx(overlap[overlap.k == 20].recall.mean())
        assert Path(results[name]["report"]).is_file()
