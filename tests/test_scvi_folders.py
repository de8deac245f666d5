"""scvi-tools model folders (``model.save(dir)``) as a user has them: read without unpickling code,
explained from the command line, never written into."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lrp_domains.bio.cells import scvi_models as S
from lrp_domains.bio.cells.expression import ExpressionExplainer
from lrp_domains.cli import app
from lrp_domains.errors import InputError

pytestmark = pytest.mark.training

CLASSES = ("alpha", "beta", "gamma")
ROOT = Path(__file__).resolve().parents[1]


def _data(n_cells: int = 60, n_genes: int = 30, seed: int = 0) -> ad.AnnData:
    """Poisson counts, 3 labels (class k: genes 10k..10k+9 four times as expressed), 6 cells unlabelled."""
    rng = np.random.default_rng(seed)
    labels = np.array([CLASSES[i % 3] for i in range(n_cells)], dtype=object)
    rates = np.full((n_cells, n_genes), 1.5)
    for k in range(3):
        rates[labels == CLASSES[k], 10 * k : 10 * k + 10] *= 4.0
    counts = rng.poisson(rates * rng.uniform(0.5, 2.0, size=(n_cells, 1))).astype(np.float32)
    labels[:6] = "Unknown"
    obs = pd.DataFrame({"cell_type": labels}, index=[f"cell{i}" for i in range(n_cells)])
    return ad.AnnData(counts, obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]))


@contextlib.contextmanager
def _quiet():
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def _train_and_save(cls, data: ad.AnnData, path: Path, **kwargs) -> Path:
    """As a user does: setup, build, train a few steps (scvi-tools' default logger: the history
    tables are pandas DataFrames in model.pt), ``model.save(path)``."""
    import scvi

    scvi.settings.seed = 0
    data = data.copy()
    with _quiet():
        if cls is scvi.model.SCANVI:
            cls.setup_anndata(data, labels_key="cell_type", unlabeled_category="Unknown")
        else:
            cls.setup_anndata(data)
        model = cls(data, **kwargs)
        model.train(max_epochs=2, accelerator="cpu", devices=1, enable_progress_bar=False, batch_size=32)
        model.save(str(path))
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A user's folder: a tiny scANVI with n_hidden=32 (not a default anywhere), and the data."""
    import scvi

    root = tmp_path_factory.mktemp("scvi-user")
    data = _data()
    folder = _train_and_save(scvi.model.SCANVI, data, root / "scanvi", n_hidden=32, n_latent=4)
    h5ad = root / "data.h5ad"
    data.write_h5ad(h5ad)
    return folder, h5ad, data


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and mtime (ns)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _scvi_load(cls, folder: Path, data: ad.AnnData):
    with _quiet():
        model = cls.load(str(folder), adata=data.copy(), accelerator="cpu")
    model.module.eval()
    return model


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``lrp-domains ARGS`` in a new process, as a user runs it."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "lrp_domains", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


def _write_marker(path: str) -> None:
    Path(path).write_text("code ran")


class _Payload:
    """Pickles as a call of :func:`_write_marker`: loading it with plain pickle would write a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (_write_marker, (self.path,))


# -- the journey -----------------------------------------------------------------------------------
def test_a_users_scanvi_folder_from_the_command_line(saved, tmp_path):
    """``model.save(dir)``, then ``run genes`` and ``bio genes`` with ``--model dir``: the relevance
    equals scvi-tools' own ``SCANVI.load(dir, adata)`` explained in Python, and the folder is
    untouched."""
    import scvi

    from lrp_domains.run import read_manifest, read_results

    folder, h5ad, data = saved
    before = _files(folder)
    run = _cli("run", "genes", str(h5ad), "--model", str(folder), "--out", str(tmp_path / "D"), "--no-progress")
    assert run.returncode == 0, run.stderr
    report = _cli("bio", "genes", str(h5ad), "--model", str(folder), "--out", str(tmp_path / "R"), "--no-progress")
    assert report.returncode == 0, report.stderr
    assert _files(folder) == before  # names, bytes and mtimes

    loaded = _scvi_load(scvi.model.SCANVI, folder, data)
    assert loaded.module.z_encoder.encoder.fc_layers[0][0].out_features == 32
    expected = S.explainer(loaded).explain(data)
    genes = read_manifest(tmp_path / "D")["settings"]["genes"]
    assert genes == list(data.var_names)
    results = read_results(tmp_path / "D")
    assert results["prediction"].tolist() == expected.prediction.tolist()
    np.testing.assert_allclose(
        np.stack(results["relevance"].to_numpy()), expected.relevance[genes].to_numpy(), rtol=1e-5, atol=1e-6
    )
    written = pd.read_parquet(tmp_path / "R" / "relevance.parquet")
    np.testing.assert_allclose(written[genes].to_numpy(), expected.relevance[genes].to_numpy(), rtol=1e-5, atol=1e-6)


# -- the reader ------------------------------------------------------------------------------------
def test_the_reader_rebuilds_the_users_module_without_unpickling(saved):
    import scvi

    folder, _, data = saved
    read = S.read_model_folder(folder)
    loaded = _scvi_load(scvi.model.SCANVI, folder, data)
    assert read.model_name == "SCANVI" and type(read.module) is type(loaded.module)
    assert read.genes == list(data.var_names)
    # scvi-tools' own label order, "Unknown" excluded (as predict names the columns)
    assert read.classes == S.classes_of(loaded) == list(loaded.predict(soft=True).columns)
    assert sorted(read.classes) == list(CLASSES)
    assert read.settings["n_hidden"] == 32 and read.settings["n_latent"] == 4
    theirs = loaded.module.state_dict()
    ours = read.module.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k].cpu()) for k in ours)
    counts = torch.as_tensor(data.X)
    with torch.no_grad():
        torch.testing.assert_close(S.scanvi_classifier(read)(counts), loaded.module.classify(counts))
    explainer = ExpressionExplainer.from_options(str(folder))
    assert explainer.genes == read.genes and explainer.classes == read.classes


def test_a_model_file_holding_code_is_refused_and_nothing_runs(saved, tmp_path):
    """A model.pt whose pickle would call a function (here: write a file) is refused, naming it."""
    folder, _, _ = saved
    state = torch.load(folder / "model.pt", weights_only=False)  # our own test file
    marker = tmp_path / "ran"
    state["attr_dict"]["history_"] = {"train_loss": _Payload(str(marker))}
    (tmp_path / "evil").mkdir()
    torch.save(state, tmp_path / "evil" / "model.pt")
    with pytest.raises(InputError, match="_write_marker"):
        S.read_model_folder(tmp_path / "evil")
    assert not marker.exists()
    result = CliRunner().invoke(
        app, ["run", "genes", "data.h5ad", "--model", str(tmp_path / "evil"), "--out", str(tmp_path / "D")]
    )
    assert result.exit_code == 2 and not marker.exists() and "_write_marker" in result.output


def test_another_scvi_class_is_refused_naming_it(tmp_path):
    import scvi

    folder = _train_and_save(scvi.model.LinearSCVI, _data(), tmp_path / "ldvae", n_latent=3)
    with pytest.raises(InputError, match="LinearSCVI"):
        S.read_model_folder(folder)
    before = _files(folder)
    result = CliRunner().invoke(
        app, ["run", "genes", str(tmp_path / "x.h5ad"), "--model", str(folder), "--out", str(tmp_path / "D")]
    )
    assert result.exit_code == 2 and "LinearSCVI" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert _files(folder) == before


def test_an_scvi_folder_is_read_for_its_latent_space_and_refused_for_classes(tmp_path):
    """SCVI has no classifier: the reader rebuilds it (its latent space is explainable in Python:
    ``latent_module``); the genes commands refuse it in one line."""
    import scvi

    data = _data()
    folder = _train_and_save(scvi.model.SCVI, data, tmp_path / "scvi", n_hidden=16, n_latent=3)
    read = S.read_model_folder(folder)
    assert read.model_name == "SCVI" and read.classes is None and read.genes == list(data.var_names)
    loaded = _scvi_load(scvi.model.SCVI, folder, data)
    with torch.no_grad(), _quiet():
        z = S.latent_module(read)(torch.as_tensor(data.X)).numpy()
        theirs = loaded.get_latent_representation(data.copy())
    np.testing.assert_allclose(z, theirs, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="no classifier"):
        S.explainer(read)
    result = CliRunner().invoke(
        app, ["run", "genes", str(tmp_path / "x.h5ad"), "--model", str(folder), "--out", str(tmp_path / "D")]
    )
    assert result.exit_code == 2 and "SCVI" in result.output and "classifier" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_folders_that_are_not_scvi_models_are_refused_in_one_line(saved, tmp_path):
    folder, h5ad, _ = saved
    empty = tmp_path / "empty"
    empty.mkdir()
    runner = CliRunner()
    result = runner.invoke(app, ["run", "genes", str(h5ad), "--model", str(empty), "--out", str(tmp_path / "D")])
    assert result.exit_code == 2 and "model.pt" in result.output and len(result.output.strip().splitlines()) == 1
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("attr.pkl", "model_params.pt", "var_names.csv"):
        (legacy / name).write_bytes(b"x")
    result = runner.invoke(app, ["run", "genes", str(h5ad), "--model", str(legacy), "--out", str(tmp_path / "D")])
    assert result.exit_code == 2 and "convert_legacy_save" in result.output
    result = runner.invoke(
        app,
        [
            "run",
            "genes",
            str(h5ad),
            "--model",
            str(folder),
            "--weights",
            str(tmp_path / "w.safetensors"),
            "--out",
            str(tmp_path / "D"),
        ],
    )
    assert result.exit_code == 2 and "--weights" in result.output
    assert not (tmp_path / "D").exists()


# -- load_or_train ---------------------------------------------------------------------------------
def test_load_or_train_reloads_its_own_cache_when_defaults_were_used(tmp_path, monkeypatch):
    data = _data(seed=1)
    first = S.load_or_train(tmp_path / "cache", data, labels_key="cell_type", max_epochs=1)  # n_hidden: default
    recorded = json.loads((tmp_path / "cache" / "settings.json").read_text())["train"]
    assert recorded["n_hidden"] == 64 and recorded["n_latent"] == 10 and recorded["seed"] == 0

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(S, "train_scanvi", no_training)
    again = S.load_or_train(tmp_path / "cache", data, labels_key="cell_type", max_epochs=1)
    counts = torch.as_tensor(data.X)
    with torch.no_grad():
        assert torch.equal(S.scanvi_classifier(first)(counts), S.scanvi_classifier(again)(counts))
    # the defaults spelled out are the same settings
    S.load_or_train(tmp_path / "cache", data, labels_key="cell_type", max_epochs=1, n_hidden=64)


def test_load_or_train_loads_a_users_folder_and_writes_nothing(saved, monkeypatch):
    import scvi

    folder, _, data = saved
    before = _files(folder)

    def no_training(*args, **kwargs):
        raise AssertionError("trained into the user's folder")

    monkeypatch.setattr(S, "train_scanvi", no_training)
    with pytest.warns(UserWarning, match="not used"):
        model = S.load_or_train(folder, data, labels_key="cell_type", n_hidden=64)
    assert _files(folder) == before
    loaded = _scvi_load(scvi.model.SCANVI, folder, data)
    counts = torch.as_tensor(data.X)
    with torch.no_grad():
        torch.testing.assert_close(S.scanvi_classifier(model)(counts), loaded.module.classify(counts))
    assert S.genes_of(model) == list(data.var_names) and S.classes_of(model) == S.classes_of(loaded)
