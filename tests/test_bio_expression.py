"""ExpressionExplainer: genes matched by name, clear errors, rankings, markers, DE, AnnData."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sparse
import torch
from torch import nn

import lrp_domains as L
from lrp_domains.bio import ExpressionExplainer

GENES = [f"G{i}" for i in range(12)]
CLASSES = ["A", "B", "C"]


@pytest.fixture
def explainer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    return ExpressionExplainer(model, GENES, CLASSES)


@pytest.fixture
def values():
    return np.random.default_rng(0).normal(size=(8, 12)).astype(np.float32)


def test_columns_are_matched_by_name(explainer, values):
    frame = pd.DataFrame(values, columns=GENES, index=[f"cell{i}" for i in range(8)])
    shuffled = frame[GENES[::-1]].assign(EXTRA=1.0)
    a = explainer.explain(frame)
    b = explainer.explain(shuffled)
    pd.testing.assert_frame_equal(a.relevance, b.relevance)
    assert list(a.relevance.columns) == GENES and list(a.relevance.index) == list(frame.index)
    direct = L.explain(explainer.model, torch.tensor(values), composite=explainer.composite)
    np.testing.assert_allclose(a.relevance.to_numpy(), direct.relevance.numpy(), rtol=1e-6)
    assert list(a.prediction) == [CLASSES[i] for i in direct.output.argmax(1).tolist()]


def test_missing_genes_error_or_zero(explainer, values):
    frame = pd.DataFrame(values, columns=GENES).drop(columns=["G3", "G7"])
    with pytest.raises(ValueError, match=r"2 of the model's 12 genes are not in the data: G3, G7"):
        explainer.explain(frame)
    with pytest.warns(UserWarning, match="2 of the model's 12 genes are not in the data and were set to 0"):
        result = explainer.explain(frame, missing="zero")
    filled = pd.DataFrame(values, columns=GENES).assign(G3=0.0, G7=0.0)
    pd.testing.assert_frame_equal(result.relevance, explainer.explain(filled).relevance)


def test_duplicates_nan_and_inf_are_named(explainer, values):
    frame = pd.DataFrame(values, columns=GENES, index=[f"cell{i}" for i in range(8)])
    doubled = pd.concat([frame, frame[["G2"]]], axis=1)
    with pytest.raises(ValueError, match="names 1 genes twice: G2"):
        explainer.explain(doubled)
    frame.loc["cell5", "G4"] = np.nan
    frame.loc["cell1", "G9"] = np.inf
    with pytest.raises(ValueError, match=r"2 values are NaN or infinite, in genes G4, G9 of samples cell1, cell5"):
        explainer.explain(frame)
    with pytest.raises(ValueError, match="names 1 genes twice"):
        ExpressionExplainer(explainer.model, GENES + ["G0"])


def test_arrays_must_follow_the_model_order(explainer, values):
    result = explainer.explain(values)
    assert result.relevance.shape == (8, 12)
    with pytest.raises(ValueError, match="one column per model gene"):
        explainer.explain(values[:, :5])


def test_anndata_layers_and_sparse_matrices(explainer, values):
    adata = ad.AnnData(
        X=np.zeros_like(values), obs=pd.DataFrame(index=[f"c{i}" for i in range(8)]), var=pd.DataFrame(index=GENES)
    )
    adata.layers["scaled"] = sparse.csr_matrix(values)
    from_layer = explainer.explain(adata, layer="scaled")
    frame = pd.DataFrame(values, columns=GENES, index=adata.obs_names)
    pd.testing.assert_frame_equal(from_layer.relevance, explainer.explain(frame).relevance)
    with pytest.raises(KeyError, match="no layer 'counts'"):
        explainer.explain(adata, layer="counts")
    from_layer.to_anndata(adata, key="lrp", n=5)
    np.testing.assert_allclose(adata.layers["lrp"], from_layer.relevance.to_numpy(), rtol=1e-6)
    assert adata.uns["lrp"]["composite"] == from_layer.composite
    with pytest.raises(ValueError, match="not the explained samples"):
        from_layer.to_anndata(adata[::-1].copy())


def test_targets(explainer, values):
    by_name = explainer.explain(values, target="B")
    by_index = explainer.explain(values, target=1)
    pd.testing.assert_frame_equal(by_name.relevance, by_index.relevance)
    assert set(by_name.target) == {"B"}
    labels = ["A", "C"] * 4
    per_sample = explainer.explain(values, target=labels)
    assert list(per_sample.target) == labels
    for cls in ("A", "C"):
        rows = [i for i, label in enumerate(labels) if label == cls]
        alone = explainer.explain(values, target=cls).relevance.iloc[rows]
        np.testing.assert_allclose(per_sample.relevance.iloc[rows], alone)
    with pytest.raises(ValueError, match="unknown label 'D'"):
        explainer.explain(values, target="D")
    with pytest.raises(ValueError, match="got 3 for 8 examples"):
        explainer.explain(values, target=["A", "B", "C"])


def test_rankings_by_hand(explainer, values):
    result = explainer.explain(values, target=["A", "B"] * 4)
    ranking = result.rank_genes("class", n=3)
    block = result.relevance.iloc[[0, 2, 4, 6]]
    top = block.mean(0).sort_values(ascending=False)
    a = ranking[ranking.group == "A"]
    assert list(a.gene) == list(top.index[:3]) and list(a["rank"]) == [1, 2, 3]
    np.testing.assert_allclose(a.mean_relevance, top.iloc[:3].to_numpy())
    np.testing.assert_allclose(a.fraction_positive, (block[top.index[:3]] > 0).mean(0).to_numpy())
    per_sample = result.rank_genes("sample", n=2)
    assert len(per_sample) == 16 and set(per_sample.group) == set(result.relevance.index)
    with pytest.raises(ValueError, match="by must be"):
        result.rank_genes("gene")


def test_marker_overlap_by_hand(explainer, values):
    result = explainer.explain(values, target="A")
    top2 = result.relevance.mean(0).sort_values(ascending=False).index[:2].tolist()
    markers = {"A": [top2[0], "G11" if "G11" not in top2 else "G10", "NOT_A_GENE"], "Z": ["G1"]}
    table = result.marker_overlap(markers, k=(2,))
    a = table[table["class"] == "A"].iloc[0]
    assert a.markers == 2 and a.found == 1 and a.recall == pytest.approx(0.5)
    assert np.isnan(table[table["class"] == "Z"].iloc[0].recall)


def test_compare_with_de_finds_a_planted_gene():
    pytest.importorskip("scanpy")
    rng = np.random.default_rng(1)
    values = rng.normal(size=(60, 12)).astype(np.float32)
    groups = np.array(["A", "B", "C"] * 20)
    values[groups == "A", 5] += 4.0  # G5 marks group A
    weight = torch.zeros(3, 12)
    weight[0, 5] = 1.0  # a model that reads G5 for class A
    model = nn.Sequential(nn.Linear(12, 3))
    with torch.no_grad():
        model[0].weight.copy_(weight)
        model[0].bias.zero_()
    adata = ad.AnnData(
        X=values, obs=pd.DataFrame({"group": groups}, index=[f"c{i}" for i in range(60)]), var=pd.DataFrame(index=GENES)
    )
    result = ExpressionExplainer(model, GENES, CLASSES, composite="epsilon").explain(adata, target=list(groups))
    table = result.compare_with_de(adata, "group", n=3)
    a = table[table["class"] == "A"].iloc[0]
    assert "G5" in a.shared_genes.split(",")
    assert a.overlap == len(a.shared_genes.split(","))


def test_model_comes_back_unchanged(explainer, values):
    model = explainer.model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explainer.explain(values)
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_gene_report_writes_tables_figures_and_a_page(explainer, values, tmp_path):
    from lrp_domains.report.genes import write_gene_report

    frame = pd.DataFrame(values, columns=GENES, index=[f"<cell{i}>" for i in range(8)])
    result = explainer.explain(frame, target=["A", "B"] * 4)
    written = write_gene_report(result, tmp_path, markers={"A": ["G1", "G2"]}, notes=["labels are <noisy>"])
    for key in ("relevance", "top_genes", "heatmap", "bars", "markers", "report"):
        assert written[key].exists() and written[key].stat().st_size > 0
    page = written["report"].read_text()
    assert "labels are &lt;noisy&gt;" in page and "<noisy>" not in page
    assert page.count("data:image/png;base64,") == 2 and "http" not in page.replace("http-equiv", "")
    assert pd.read_parquet(written["relevance"]).shape == (8, 12)


def test_compare_with_de_says_what_to_install_without_scanpy(explainer, values, monkeypatch):
    import sys

    result = explainer.explain(values)
    monkeypatch.setitem(sys.modules, "scanpy", None)
    with pytest.raises(ImportError, match="pip install scanpy"):
        result.compare_with_de(None, "group")
