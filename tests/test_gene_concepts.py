"""Hidden units of expression models (CRP on genes): lrp_domains.bio.concepts.units.

Independent expectations: conservation (every unit's conditional gene relevance, summed over the
units, is the gene relevance of ExpressionExplainer.explain), a hand-wired MLP whose unit reads two
known genes and feeds one known class, and unit relevance written here from scratch as activation x
plain gradient (equal to the epsilon rule on a bias-free ReLU MLP up to its stabilizer).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from models import EXPRESSION_CLASSES, EXPRESSION_GENES, assert_unchanged, expression_mlp, seeded, snapshot
from torch import nn

from lrp_domains.bio import ExpressionExplainer
from lrp_domains.bio.concepts.units import UnitTable, default_layer, hidden_units, write_unit_table


def _bias_free(seed: int = 0) -> nn.Sequential:
    seeded(seed)
    return nn.Sequential(nn.Linear(12, 16, bias=False), nn.ReLU(), nn.Linear(16, 3, bias=False)).double()


def _cells(n: int = 20, seed: int = 0, shuffle: bool = True) -> pd.DataFrame:
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n, len(EXPRESSION_GENES), generator=g, dtype=torch.float64).numpy()
    frame = pd.DataFrame(values, index=[f"cell{i}" for i in range(n)], columns=EXPRESSION_GENES)
    # columns in another order than the model's, plus a gene the model does not read
    frame["EXTRA"] = 1.0
    return frame[frame.columns[::-1]] if shuffle else frame


# -- (a) conservation: the units' conditional gene relevances add up to the gene relevance --------------
@pytest.mark.parametrize("bias", [False, True])
def test_units_sum_to_the_explainers_gene_relevance(bias):
    model = _bias_free() if not bias else expression_mlp()[0].double()
    explainer = ExpressionExplainer(model, EXPRESSION_GENES, EXPRESSION_CLASSES)
    data = _cells(20)
    reference = explainer.explain(data).relevance  # cells x genes, the model's gene order
    # batch_size 3: several chunks of cells are added up
    table = hidden_units(explainer, data, batch_size=3)
    assert table.layer == "1" and table.at == "output"
    assert table.gene_relevance.shape == (16, 12) and table.channel_relevance.shape == (20, 16)
    assert list(table.gene_relevance.columns) == EXPRESSION_GENES
    np.testing.assert_allclose(table.gene_relevance.sum(0).to_numpy(), reference.mean(0).to_numpy(), rtol=0, atol=1e-6)
    # per cell: a table of one cell holds that cell's conditional relevances
    for name in ["cell0", "cell7", "cell19"]:
        single = hidden_units(explainer, data.loc[[name]])
        np.testing.assert_allclose(
            single.gene_relevance.sum(0).to_numpy(), reference.loc[name].to_numpy(), rtol=0, atol=1e-6
        )
    assert table.frame["share"].sum() == pytest.approx(1.0, abs=1e-9)
    if not bias:
        # bias-free epsilon: the layer's unit relevances hold the explained logit
        np.testing.assert_allclose(table.total.to_numpy(), table.explained.to_numpy(), rtol=1e-4, atol=1e-6)


def test_a_subset_of_units_and_chunking_change_nothing():
    explainer = ExpressionExplainer(_bias_free(1), EXPRESSION_GENES, EXPRESSION_CLASSES)
    data = _cells(17, seed=1)
    full = hidden_units(explainer, data, batch_size=256)
    few = hidden_units(explainer, data, top_units=3, batch_size=4)
    assert few.units == full.units[:3]
    assert list(full.frame["share"]) == sorted(full.frame["share"], reverse=True)
    np.testing.assert_allclose(
        few.gene_relevance.to_numpy(), full.gene_relevance.loc[few.units].to_numpy(), rtol=0, atol=1e-10
    )
    np.testing.assert_allclose(
        few.served_gene_relevance.to_numpy(), full.served_gene_relevance.loc[few.units].to_numpy(), rtol=0, atol=1e-10
    )
    pd.testing.assert_frame_equal(few.frame, full.frame.head(3))
    chosen = hidden_units(explainer, data, units=[5, 2])
    assert sorted(chosen.units) == [2, 5]
    assert set(chosen.frame["top_genes"]) == set(full.frame.set_index("unit").loc[[2, 5], "top_genes"])


# -- (b) a hand-wired unit: reads genes G1 and G4, feeds class C ----------------------------------------
def _wired() -> tuple[nn.Sequential, pd.DataFrame, list[str]]:
    genes = [f"G{i}" for i in range(6)]
    first = torch.zeros(4, 6, dtype=torch.float64)
    first[0, [0, 2]] = 1.0  # unit 0 reads G0, G2
    first[1, [3, 5]] = 1.0  # unit 1 reads G3, G5
    first[2, 1], first[2, 4] = 1.5, 1.0  # unit 2 reads G1 (more) and G4
    first[3] = 0.2  # unit 3 reads every gene a little
    second = torch.zeros(3, 4, dtype=torch.float64)
    second[0, 0] = second[1, 1] = second[2, 2] = 1.0  # unit k feeds class k only, for k < 3
    second[:, 3] = 0.3  # unit 3 feeds every class
    model = nn.Sequential(nn.Linear(6, 4, bias=False), nn.ReLU(), nn.Linear(4, 3, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(first)
        model[2].weight.copy_(second)
    g = torch.Generator().manual_seed(3)
    values = torch.rand(30, 6, generator=g, dtype=torch.float64) + 0.1
    labels = [["A", "B", "C"][i % 3] for i in range(30)]
    return model, pd.DataFrame(values.numpy(), index=[f"c{i}" for i in range(30)], columns=genes), labels


@pytest.mark.parametrize("genes_from", ["served", "all"])
def test_a_wired_unit_names_its_genes_and_its_class(genes_from):
    model, data, labels = _wired()
    explainer = ExpressionExplainer(model, list(data.columns), ["A", "B", "C"])
    table = hidden_units(explainer, data, target=labels, top_genes=2, genes_from=genes_from)
    row = table.frame.set_index("unit").loc[2]
    assert row["top_genes"] == "G1, G4"  # G1 has the larger weight
    assert row["classes"] == "C"
    assert row["low_genes"] == ""  # the inputs are positive
    # it carries relevance only in cells explained as C, and reads nothing but G1 and G4
    in_c = np.array(labels) == "C"
    assert (table.channel_relevance[2].to_numpy()[~in_c] == 0).all()
    assert (table.channel_relevance[2].to_numpy()[in_c] > 0).all()
    assert (table.gene_relevance.loc[2].drop(["G1", "G4"]) == 0).all()
    assert table.class_share.loc[2, "C"] > 0 and (table.class_share.loc[2, ["A", "B"]] == 0).all()
    for unit, klass, pair in [(0, "A", {"G0", "G2"}), (1, "B", {"G3", "G5"})]:
        other = table.frame.set_index("unit").loc[unit]
        assert set(other["top_genes"].split(", ")) == pair and other["classes"] == klass
    # the unit feeding every class serves all three when its share is similar in each
    assert set(table.frame.set_index("unit").loc[3, "classes"].split(", ")) <= {"A", "B", "C"}
    assert table.lines(1, genes=2)[0].startswith(f"unit {table.units[0]}: ")


def test_low_genes_are_those_relevant_by_being_low():
    model, data, labels = _wired()
    # class C cells with G4 far below zero: a negative weight on G4 makes its absence the evidence
    with torch.no_grad():
        model[0].weight[2, 4] = -1.0
    data.loc[np.array(labels) == "C", "G4"] = -3.0
    explainer = ExpressionExplainer(model, list(data.columns), ["A", "B", "C"])
    table = hidden_units(explainer, data, target=labels, top_genes=2)
    row = table.frame.set_index("unit").loc[2]
    assert row["top_genes"] == "G4, G1" and row["low_genes"] == "G4"
    assert "G4 (low)" in table.lines(genes=2)[table.units.index(2)]


# -- (c) reference cells: the cells where the unit has the most relevance -------------------------------
def test_reference_cells_are_the_cells_of_largest_unit_relevance():
    model = _bias_free(4)
    explainer = ExpressionExplainer(model, EXPRESSION_GENES, EXPRESSION_CLASSES)
    data = _cells(25, seed=4)
    table = hidden_units(explainer, data, examples=4)
    # from scratch, LRP-epsilon on the last layer in matrix form: R_j = h_j w_tj z_t / (z_t + eps sign z_t)
    # (float64 data stay float64 for a float64 model)
    x = torch.tensor(data[EXPRESSION_GENES].to_numpy(np.float64), dtype=torch.float64)
    with torch.no_grad():
        hidden = model[:2](x)
        z = model[2](hidden)
    top = z.argmax(1)
    logit = z.gather(1, top[:, None])
    stabilized = logit + 1e-6 * torch.where(logit >= 0, 1.0, -1.0)
    relevance = (hidden * model[2].weight[top] * logit / stabilized).detach().numpy()
    np.testing.assert_allclose(table.channel_relevance[list(range(16))].to_numpy(), relevance, rtol=1e-9, atol=1e-12)
    names = np.array(data.index)
    for row in table.frame.itertuples():
        expected = names[np.argsort(-relevance[:, row.unit], kind="stable")[:4]]
        assert row.reference_cells.split(", ") == list(expected)
    assert hidden_units(explainer, data.iloc[:2], examples=5).frame["reference_cells"].str.count(",").max() == 1


# -- (d) the model comes back unchanged -----------------------------------------------------------------
def test_model_unchanged_also_after_errors():
    model = expression_mlp()[0]
    model.train()
    model[0].weight.requires_grad_(False)
    explainer = ExpressionExplainer(model, EXPRESSION_GENES, EXPRESSION_CLASSES)
    before = snapshot(model)
    table = hidden_units(explainer, _cells(6), target="B")
    assert explainer.model is model and isinstance(table, UnitTable)
    assert_unchanged(before, snapshot(model))
    with pytest.raises(ValueError):
        hidden_units(explainer, _cells(6), layer="nope")
    assert_unchanged(before, snapshot(model))


# -- (e) clear errors -----------------------------------------------------------------------------------
def test_clear_errors(tmp_path):
    explainer = ExpressionExplainer(expression_mlp()[0], EXPRESSION_GENES, EXPRESSION_CLASSES)
    with pytest.raises(ValueError, match="layer 'hidden9': the model has no module of that name"):
        hidden_units(explainer, _cells(4), layer="hidden9")
    renamed = _cells(4).rename(columns={"G3": "ENSG0003", "G7": "ENSG0007"})
    with pytest.raises(ValueError, match=r"2 of the model's 12 genes are not in the data: G3, G7.*symbols vs Ensembl"):
        hidden_units(explainer, renamed)
    with pytest.raises(ValueError, match="units \\[16\\] are outside layer '1'.s 16 units"):
        hidden_units(explainer, _cells(4), units=[16])
    with pytest.raises(ValueError, match="genes_from must be 'served' or 'all'"):
        hidden_units(explainer, _cells(4), genes_from="some")
    with pytest.raises(ValueError, match="reads the genes directly: it has no hidden layer"):
        hidden_units(ExpressionExplainer(nn.Linear(12, 3), EXPRESSION_GENES), _cells(4))
    with pytest.raises(ValueError, match="does not exist"):
        write_unit_table(hidden_units(explainer, _cells(4)), tmp_path / "absent" / "units.tsv")


def test_default_layer_rule():
    x = torch.randn(1, 12)
    assert default_layer(expression_mlp()[0], x) == ("1", "output")

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(12, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.inner(x)))

    functional = Functional()
    assert default_layer(functional, x) == ("head", "input")
    # the classifier's input is a cut: its units still hold all of the gene relevance
    explainer = ExpressionExplainer(functional.double(), EXPRESSION_GENES, EXPRESSION_CLASSES)
    data = _cells(5)
    table = hidden_units(explainer, data)
    assert (table.layer, table.at) == ("head", "input") and table.gene_relevance.shape == (8, 12)
    np.testing.assert_allclose(
        table.gene_relevance.sum(0).to_numpy(), explainer.explain(data).relevance.mean(0).to_numpy(), rtol=0, atol=1e-6
    )
    # any module can be named
    named = hidden_units(ExpressionExplainer(_bias_free(), EXPRESSION_GENES), data, layer="0")
    assert named.layer == "0" and named.channel_relevance.shape == (5, 16)


def test_write_unit_table_atomically_and_not_through_a_symlink(tmp_path):
    explainer = ExpressionExplainer(expression_mlp()[0], EXPRESSION_GENES, EXPRESSION_CLASSES)
    table = hidden_units(explainer, _cells(8))
    elsewhere = tmp_path / "elsewhere.tsv"
    elsewhere.write_text("keep me\n")
    path = tmp_path / "units.tsv"
    path.symlink_to(elsewhere)
    assert write_unit_table(table, path) == path
    assert elsewhere.read_text() == "keep me\n" and not path.is_symlink()
    back = pd.read_csv(path, sep="\t", keep_default_na=False)
    assert list(back.columns) == ["unit", "share", "classes", "top_genes", "low_genes", "reference_cells"]
    assert back["unit"].tolist() == table.units
    assert back["top_genes"].tolist() == table.frame["top_genes"].tolist()
    np.testing.assert_allclose(back["share"], table.frame["share"], rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.tsv", "units.tsv"]


# -- the default PBMC model on its real cells -------------------------------------------------------------
@pytest.fixture(scope="module")
def pbmc():
    pytest.importorskip("scanpy")
    pytest.importorskip("safetensors")
    from lrp_domains.bio.cells.pbmc_mlp import load_default_data, markers_in

    explainer = ExpressionExplainer.default()
    return explainer, load_default_data(), markers_in(explainer.genes)["CD19+ B"]


def test_pbmc_b_cell_units_read_b_cell_markers(pbmc):
    """The unit with the largest share of B-cell relevance reads B-cell markers.

    Measured with the shipped weights (target: each cell's predicted class): over all 700 cells that
    unit (56) also serves two T-cell classes, and its top 10 genes over the cells of its classes hold
    one B marker (CD79B, 6th, 6 % above the 11th gene; ranked over all cells instead, none); over the
    B cells alone its top 10 hold CD79B (1st, 16 % above the 2nd), MS4A1 and BANK1.
    """
    explainer, adata, b_markers = pbmc
    state = snapshot(explainer.model)
    table = hidden_units(explainer, adata)
    assert (table.layer, table.at) == ("3", "output") and table.channel_relevance.shape == (700, 64)
    assert_unchanged(state, snapshot(explainer.model))
    unit = int(table.class_share["CD19+ B"].idxmax())
    row = table.frame.set_index("unit").loc[unit]
    assert "CD19+ B" in row["classes"].split(", ")
    assert set(row["top_genes"].split(", ")) & set(b_markers)
    # restricted to the B cells (explained as B), the same question has a sharper answer
    b_cells = adata[adata.obs["bulk_labels"] == "CD19+ B"]
    only_b = hidden_units(explainer, b_cells, target="CD19+ B", top_units=1)
    top = only_b.frame.iloc[0]
    assert top["classes"] == "CD19+ B"
    assert len(set(top["top_genes"].split(", ")) & set(b_markers)) >= 2
    assert top["top_genes"].split(", ")[0] in b_markers
    assert set(top["reference_cells"].split(", ")) <= set(b_cells.obs_names)
