"""The default gene-expression model: an MLP on scanpy's pbmc68k_reduced (weights from workflows/bio/train_pbmc.py)."""

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors")

from lrp_domains.bio.cells import pbmc_mlp as default_model  # noqa: E402

#: Floor on the held-out balanced accuracy. Chance is 0.10 (10 classes) and always predicting the majority
#: class ("Dendritic") gives 0.10 too. The shipped model's CV estimate inside the training split and its test
#: value are about 0.75; the floor leaves room for the tiny classes (2-4 test cells each, one cell = 0.025-0.05
#: of balanced accuracy) and the noisy labels, while failing for a broken or untrained model.
BALANCED_ACCURACY_FLOOR = 0.5


@pytest.fixture(scope="module")
def model_genes_classes():
    return default_model.load_default_model()


@pytest.fixture(scope="module")
def adata():
    pytest.importorskip("scanpy")
    return default_model.load_default_data()


@pytest.fixture(scope="module")
def meta():
    return default_model.read_sidecar()


def _balanced_accuracy(y, pred):
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def test_model_loads_offline(model_genes_classes, meta):
    model, genes, classes = model_genes_classes
    assert not model.training
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU"] * (len(meta["architecture"]["sizes"]) - 2) + [
        "Linear"
    ]
    assert [m.in_features for m in model if isinstance(m, torch.nn.Linear)] == meta["architecture"]["sizes"][:-1]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert len(genes) == 765 and len(classes) == 10
    assert default_model.WEIGHTS_PATH.stat().st_size < 5 * 1024 * 1024
    assert meta["input"]["description"] == default_model.INPUT_DESCRIPTION
    assert any("Dendritic" in c for c in meta["caveats"])
    assert model(torch.zeros(3, len(genes))).shape == (3, 10)


def test_genes_and_classes_match_the_data(model_genes_classes, adata):
    _, genes, classes = model_genes_classes
    assert genes == list(adata.var_names)
    assert classes == list(adata.obs["bulk_labels"].cat.categories)


def test_held_out_accuracy_matches_sidecar(model_genes_classes, adata, meta):
    model, genes, classes = model_genes_classes
    cells = default_model.held_out_cells()
    assert len(cells) == meta["split"]["n_test"] == len(set(cells))
    x, y = default_model.model_inputs(adata, cells)
    assert x.dtype == torch.float32 and x.shape == (len(cells), len(genes))
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    y = y.numpy()
    accuracy, balanced = float(np.mean(pred == y)), _balanced_accuracy(y, pred)
    assert accuracy == pytest.approx(meta["metrics"]["test_accuracy"], abs=1e-6)
    assert balanced == pytest.approx(meta["metrics"]["test_balanced_accuracy"], abs=1e-6)
    assert balanced > BALANCED_ACCURACY_FLOOR
    majority = np.bincount(y).max() / len(y)
    assert accuracy > majority + 0.2
    # Every class is represented in the held-out cells, and the training cells are the rest.
    assert set(y.tolist()) == set(range(len(classes)))
    assert len(set(adata.obs_names) - set(cells)) == meta["split"]["n_train"]


def test_weights_must_match_sidecar(tmp_path, monkeypatch):
    meta = default_model.read_sidecar()
    meta["weights_sha256"] = "0" * 64
    sidecar = tmp_path / "pbmc-mlp.json"
    sidecar.write_text(json.dumps(meta))
    monkeypatch.setattr(default_model, "SIDECAR_PATH", sidecar)  # read afresh each time: no cache to clear
    with pytest.raises(ValueError, match="does not match its sidecar"):
        default_model.load_default_model()


def test_missing_scanpy_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "scanpy", None)
    with pytest.raises(ImportError) as info:
        default_model.load_default_data()
    message = str(info.value)
    assert "pip install scanpy" in message
    assert 'pip install "lrp-domains[bio]"' in message


def test_markers_in_keeps_only_model_genes(model_genes_classes):
    _, genes, classes = model_genes_classes
    assert set(default_model.PBMC_MARKERS) == set(classes)
    kept = default_model.markers_in(genes)
    present = set(genes)
    assert kept and all(g in present for markers in kept.values() for g in markers)
    for cls, markers in kept.items():  # order and membership follow PBMC_MARKERS
        assert markers == [g for g in default_model.PBMC_MARKERS[cls] if g in present]
    for expected in [
        "LYZ",
        "S100A8",
        "S100A9",
        "MS4A1",
        "CD79A",
        "CD79B",
        "NKG7",
        "GNLY",
        "CD8A",
        "CD8B",
        "FCER1A",
        "CST3",
        "CD3E",
        "IL7R",
        "CCR7",
        "CD4",
        "FCGR3A",
    ]:
        assert any(expected in markers for markers in kept.values()), expected
    assert "CD14" not in kept["CD14+ Monocyte"] and "CD14" in default_model.PBMC_MARKERS["CD14+ Monocyte"]
    assert default_model.markers_in(["LYZ", "NOT_A_GENE"]) == {"CD14+ Monocyte": ["LYZ"]}
    assert default_model.markers_in([]) == {}


def test_build_mlp_layout():
    net = default_model.build_mlp([5, 4, 3])
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear"]
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(ValueError):
        default_model.build_mlp([5])
