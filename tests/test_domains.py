"""Domains as plug-ins: a new domain defined here runs like the built-in ones; protein sequences;
no dispatch on class names below the explainers.

The ``tabular`` domain below lives only in this file: it reaches ``explain_dataset`` (both engines),
the manifest, resume and the registry through the contract of :mod:`lrp_domains.domains` alone.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import lrp_domains
from lrp_domains import domains
from lrp_domains.bio import SequenceExplainer
from lrp_domains.bio.sequences.onehot import PROTEIN, one_hot, unknown_symbol
from lrp_domains.core.composite import Composite
from lrp_domains.core.engine.attribution import resolve_composite
from lrp_domains.domains import DomainExplainer
from lrp_domains.errors import InputError
from lrp_domains.files.formats import Shard
from lrp_domains.files.tables import TableRecords
from lrp_domains.models import model_fingerprint
from lrp_domains.run import explain_dataset, read_manifest, read_results

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ("sepal", "petal", "stem", "leaf")
CLASSES = 3
TABULAR_COLUMNS = ["row", "id", "explained", "delta", "prediction", "relevance", "status"]


# -- a domain defined entirely in this file ----------------------------------------------------------
def tabular_model() -> nn.Module:
    """A tiny float64 MLP, the same weights on every call (and in every Ray worker)."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(1234)
        return nn.Sequential(nn.Linear(len(FEATURES), 8), nn.ReLU(), nn.Linear(8, CLASSES)).double()


class FeatureRows:
    """Reader of a table of numeric features: ids (the ``id`` column, else the row number) and a
    float64 ``(n, features)`` tensor per shard, built on the generic :class:`TableRecords`."""

    def __init__(self, path: str | Path, features: Sequence[str]) -> None:
        self.records = TableRecords(path, column=None, what="a tabular run")
        self.path = self.records.path
        self.features = tuple(features)
        missing = [f for f in self.features if f not in (self.records.header or [])]
        if missing:
            raise InputError(
                f"{self.path.name} has no feature column(s) {missing}; its columns are {self.records.header}"
            )

    def shards(self, shard_size: int) -> list[Shard]:
        return self.records.shards(shard_size)

    def read(self, shard: Shard) -> tuple[list[str], torch.Tensor]:
        ids, values = [], []
        for k, (_, fields) in enumerate(self.records.read_rows(shard)):
            ids.append(str(fields.get("id") or shard.start + k))
            values.append([float(fields[f]) for f in self.features])
        return ids, torch.tensor(values, dtype=torch.float64)


class TabularExplainer(DomainExplainer):
    """Relevance of each numeric feature of a row for one output of an MLP."""

    kind: ClassVar[str] = "tabular"
    item: ClassVar[str] = "row"
    run_options: ClassVar[dict[str, Any]] = {"target": None, "batch_size": 64}
    columns: ClassVar[tuple[str, ...]] = ("explained", "delta", "prediction", "relevance")

    def __init__(
        self, model: nn.Module, features: Sequence[str] = FEATURES, composite: str | Composite = "epsilon"
    ) -> None:
        self.model = model
        self.features = tuple(features)
        self.composite = resolve_composite(composite)

    def reader(self, path: str | Path, column: str = "text") -> FeatureRows:
        return FeatureRows(path, self.features)

    def explain_batch(
        self, ids: Sequence[str], items: torch.Tensor, first_row: int = 0, target: Any = None, batch_size: int = 64
    ) -> lrp_domains.Explanation:
        return lrp_domains.explain(self.model, items, target=target, composite=self.composite, batch_size=batch_size)

    def result_rows(self, result: lrp_domains.Explanation, ids: Sequence[str]) -> dict[str, list]:
        return {
            "explained": result.explained.double().tolist(),
            "delta": result.delta.double().tolist(),
            "prediction": result.output.argmax(1).tolist(),
            "relevance": [row.tolist() for row in result.relevance.double()],
        }

    def settings(self) -> dict[str, Any]:
        return {"features": list(self.features)}

    @classmethod
    def from_options(
        cls, model: str | None = None, weights: str | None = None, composite: str | None = None
    ) -> TabularExplainer:
        if model is None:
            if weights is not None:
                raise InputError("--weights needs --model MODULE:FACTORY")
            return cls(tabular_model(), composite=composite or cls.default_composite)
        from lrp_domains.models import load_user_model

        return cls(load_user_model(model, weights).model, composite=composite or cls.default_composite)


def make_tabular_explainer() -> TabularExplainer:
    """Module-level factory: picklable, so Ray workers build their own explainer."""
    return TabularExplainer(tabular_model())


@pytest.fixture
def registered(monkeypatch):
    """The tabular domain registered for one test; the registry is restored afterwards."""
    monkeypatch.setattr(domains, "_REGISTRY", dict(domains._REGISTRY))
    domains.register(TabularExplainer)
    yield TabularExplainer


def _features(n: int = 23, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=list(FEATURES))
    frame.insert(0, "id", [f"row{i}" for i in range(n)])
    frame["note"] = "ignored, with a comma"  # a quoted field the reader must skip
    return frame


def _csv(path: Path, n: int = 23) -> tuple[Path, pd.DataFrame]:
    frame = _features(n)
    frame.to_csv(path, index=False, float_format="%.17g")  # every float64 read back exactly
    return path, frame


def _stack(column: pd.Series) -> np.ndarray:
    return np.stack(column.map(np.asarray).to_list())


def _shard_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("shard-*.parquet"))


# -- the tabular domain: registry ------------------------------------------------------------------
def test_registry_finds_a_domain_registered_at_run_time(registered):
    assert domains.get("tabular") is TabularExplainer
    assert "tabular" in domains.kinds()
    assert {"text", "sequences", "genes"} <= set(domains.kinds())  # entry points still listed
    built = domains.build_explainer("tabular")
    assert isinstance(built, TabularExplainer) and domains.kind_of(built) == "tabular"
    assert built.composite.name == "epsilon"
    assert model_fingerprint(built.model) == model_fingerprint(tabular_model())  # deterministic factory


def test_registry_is_restored_after_a_test():
    assert "tabular" not in domains._REGISTRY
    with pytest.raises(ValueError, match="no explainer of kind 'tabular'; known kinds: .*sequences"):
        domains.get("tabular")


def test_register_and_kind_of_refuse_what_is_not_an_explainer(monkeypatch):
    monkeypatch.setattr(domains, "_REGISTRY", dict(domains._REGISTRY))
    with pytest.raises(TypeError, match="expected an explainer that fulfils the DomainExplainer contract.*object"):
        domains.kind_of(object())
    with pytest.raises(TypeError):
        domains.kind_of(DomainExplainer())  # no kind
    for bad in (object, DomainExplainer, make_tabular_explainer):
        with pytest.raises(TypeError, match="register needs a DomainExplainer subclass with a kind"):
            domains.register(bad)


def test_unknown_option_names_the_domains_options(tmp_path):
    path, _ = _csv(tmp_path / "in.csv", n=5)
    explainer = make_tabular_explainer()
    with pytest.raises(ValueError, match=r"a tabular run takes no option 'colour'; its options are batch_size, target"):
        explain_dataset(explainer, path, tmp_path / "out", progress=False, colour="red")
    assert not (tmp_path / "out").exists()  # refused before anything was written
    reader = explainer.reader(path)
    ids, items = reader.read(reader.shards(10)[0])
    with pytest.raises(
        ValueError,
        match=r"the tabular explainer takes no option 'center'; its options are "
        r"batch_size, target",
    ):
        explainer.explain_rows(ids, items, 0, center=True)


def test_tabular_reader_refuses_missing_features(tmp_path):
    path = tmp_path / "in.csv"
    _features(4).drop(columns="stem").to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"in.csv has no feature column\(s\) \['stem'\]"):
        explain_dataset(make_tabular_explainer(), path, tmp_path / "out", progress=False)


# -- the tabular domain: runs ----------------------------------------------------------------------
def test_tabular_run_equals_direct_explanation(tmp_path):
    path, frame = _csv(tmp_path / "in.csv")
    explainer = make_tabular_explainer()
    explain_dataset(explainer, path, tmp_path / "out", shard_size=5, progress=False, target=1)
    rows = read_results(tmp_path / "out")
    assert list(rows.columns) == TABULAR_COLUMNS
    assert list(rows.row) == list(range(len(frame))) and list(rows.id) == list(frame.id)
    x = torch.tensor(frame[list(FEATURES)].to_numpy(), dtype=torch.float64)
    direct = lrp_domains.explain(tabular_model(), x, target=1, composite="epsilon")
    np.testing.assert_allclose(_stack(rows.relevance), direct.relevance.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(rows.explained, direct.explained.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(rows.delta, direct.delta.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(rows.prediction, direct.output.argmax(1).numpy())
    # the explained value is the model's output at the target, and relevance + delta conserves it
    np.testing.assert_allclose(rows.explained, tabular_model()(x)[:, 1].detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(_stack(rows.relevance).sum(1) + rows.delta, rows.explained, rtol=0, atol=1e-9)


def test_tabular_manifest_records_the_domain(tmp_path):
    path, _ = _csv(tmp_path / "in.csv", n=11)
    explainer = make_tabular_explainer()
    explain_dataset(explainer, path, tmp_path / "out", shard_size=4, progress=False)
    manifest = read_manifest(tmp_path / "out")
    settings = manifest["settings"]
    assert settings["kind"] == "tabular"
    assert settings["explainer"] == f"{__name__}.TabularExplainer"
    assert settings["features"] == list(FEATURES) == explainer.settings()["features"]
    assert settings["composite"] == "epsilon" and settings["model"] == model_fingerprint(explainer.model)
    assert settings["shard_size"] == 4 and settings["options"] == {}
    assert manifest["complete"] and manifest["input"]["rows"] == 11 and manifest["input"]["shards"] == 3
    assert sorted(manifest["shards"]) == ["0", "1", "2"]
    # other settings of the domain are another run
    other = TabularExplainer(tabular_model(), features=FEATURES[::-1])
    with pytest.raises(ValueError, match=r"settings\.features"):
        explain_dataset(other, path, tmp_path / "out", shard_size=4, progress=False)


def test_tabular_resume_recomputes_only_missing_shards(tmp_path, monkeypatch):
    path, _ = _csv(tmp_path / "in.csv", n=20)
    out = tmp_path / "out"
    explainer = make_tabular_explainer()
    explain_dataset(explainer, path, out, shard_size=5, progress=False)
    first = read_results(out)
    times = {f: (out / f).stat().st_mtime_ns for f in _shard_files(out)}
    calls: list[int] = []
    real = explainer.explain_rows

    def counting(ids, items, first_row=0, **options):
        calls.append(first_row)
        return real(ids, items, first_row, **options)

    monkeypatch.setattr(explainer, "explain_rows", counting)
    explain_dataset(explainer, path, out, shard_size=5, progress=False)
    assert calls == []
    assert {f: (out / f).stat().st_mtime_ns for f in _shard_files(out)} == times
    # forget shard 2 (as if the run had been killed before it): only it is recomputed
    manifest = read_manifest(out)
    del manifest["shards"]["2"]
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    explain_dataset(explainer, path, out, shard_size=5, progress=False)
    assert calls == [10]
    assert {f: (out / f).stat().st_mtime_ns for f in _shard_files(out) if f != "shard-00002.parquet"} == {
        f: t for f, t in times.items() if f != "shard-00002.parquet"
    }
    pd.testing.assert_frame_equal(read_results(out), first)
    assert read_manifest(out)["complete"]


@pytest.mark.cluster
def test_tabular_ray_engine_equals_local_engine(tmp_path):
    pytest.importorskip("ray.data")
    import ray.cloudpickle

    path, _ = _csv(tmp_path / "in.csv", n=17)
    # Ray workers cannot import this test module: send its classes and factory by value.
    module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(module)
    try:
        explain_dataset(make_tabular_explainer, path, tmp_path / "local", shard_size=4, progress=False)
        explain_dataset(
            make_tabular_explainer, path, tmp_path / "ray", shard_size=4, progress=False, engine="ray", num_workers=2
        )
    finally:
        ray.cloudpickle.unregister_pickle_by_value(module)
    local, distributed = read_manifest(tmp_path / "local"), read_manifest(tmp_path / "ray")
    assert distributed["complete"] and distributed["shards"] == local["shards"]
    assert distributed["settings"] == local["settings"] and distributed["settings"]["kind"] == "tabular"
    pd.testing.assert_frame_equal(read_results(tmp_path / "ray"), read_results(tmp_path / "local"))


# -- protein sequences -------------------------------------------------------------------------------
PROTEINS = {"p1": "MNNKXACDWY", "p2": "NNNNXYYYYQ", "p3": "mkwvtfisll", "p4": "MXXNHQRSTVG"}


def protein_model() -> nn.Module:
    """A tiny bias-free float64 CNN over the 20 amino acids."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        return nn.Sequential(
            nn.Conv1d(len(PROTEIN), 6, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.Linear(6, 3, bias=False),
        ).double()


@pytest.fixture(scope="module")
def protein_explainer() -> SequenceExplainer:
    return SequenceExplainer(protein_model(), alphabet=PROTEIN, composite="epsilon")


def test_protein_one_hot_asparagine_is_a_letter_and_x_is_unknown():
    assert len(PROTEIN) == 20 and unknown_symbol(PROTEIN) == "X" and unknown_symbol("ACGT") == "N"
    encoded = one_hot("MNXn", PROTEIN)
    assert encoded.shape == (1, 20, 4)
    for position, letter in enumerate("MN"):
        expected = torch.zeros(20)
        expected[PROTEIN.index(letter)] = 1
        torch.testing.assert_close(encoded[0, :, position], expected)
    assert encoded[0, :, 2].sum() == 0  # X: all zeros
    torch.testing.assert_close(encoded[0, :, 3], encoded[0, :, 1])  # lowercase n is asparagine too
    torch.testing.assert_close(one_hot("X", PROTEIN, n="uniform")[0, :, 0], torch.full((20,), 1 / 20))
    with pytest.raises(ValueError, match="p1: X at position 3"):
        one_hot("MNX", PROTEIN, n="error", ids=["p1"])


def test_an_alphabet_with_n_and_x_keeps_both_letters():
    """21-letter protein alphabets have X as a letter: then '?' is the unknown symbol."""
    alphabet = PROTEIN + "X"
    assert unknown_symbol(alphabet) == "?"
    encoded = one_hot("MX?", alphabet)
    assert encoded[0, 20, 1] == 1 and encoded[0, :, 1].sum() == 1 and encoded[0, :, 2].sum() == 0


@pytest.mark.parametrize("letter", ["B", "Z", "J", "U", "O", "*", "-", "1"])
def test_protein_letters_outside_the_alphabet_are_named_with_their_position(letter):
    with pytest.raises(
        ValueError,
        match=rf"p7: '{re.escape(letter)}' at position 4 is not in the alphabet "
        rf"{PROTEIN} \(nor the unknown symbol X\)",
    ):
        one_hot(f"MNK{letter}A", PROTEIN, ids=["p7"])


def test_protein_relevance_is_on_the_observed_letter_and_conserves(protein_explainer):
    sequences = [PROTEINS["p1"], PROTEINS["p2"]]
    result = protein_explainer.explain(sequences, ids=["p1", "p2"])
    assert result.relevance.shape == (2, 20, 10) and result.alphabet == PROTEIN
    onehot = one_hot(sequences, PROTEIN, dtype=torch.float64)
    torch.testing.assert_close(result.onehot.double(), onehot)
    assert (result.relevance * (1 - onehot)).abs().max() == 0  # nothing off the one-hot
    unknown = onehot.sum(1) == 0
    assert unknown[:, 4].all() and unknown.sum() == 2  # X only; N is asparagine
    assert (result.relevance.sum(1)[unknown] == 0).all() and (result.per_position[unknown] == 0).all()
    asparagine = result.relevance[:, PROTEIN.index("N")]
    assert asparagine[0, 1] != 0 and asparagine[0, 1] == result.per_position[0, 1]
    # conservation up to delta, and the explained value is the model's predicted output
    torch.testing.assert_close(result.relevance.sum((1, 2)) + result.delta, result.explained, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.per_position.sum(1) + result.delta, result.explained, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.explained, protein_model()(onehot).max(1).values.detach(), rtol=0, atol=1e-12)
    assert (result.delta.abs() <= 1e-3 * result.explained.abs()).all()  # a bias-free model loses only epsilon's share
    # the same relevance as the core's explain on the one-hot tensor
    direct = lrp_domains.explain(protein_model(), onehot, composite="epsilon", strict=True)
    torch.testing.assert_close(result.channel_relevance.double(), direct.relevance, rtol=0, atol=1e-12)


def test_protein_fasta_file_equals_the_strings(tmp_path, protein_explainer):
    path = tmp_path / "proteins.fa"
    path.write_text(
        "".join(f">{name} a protein\n{sequence[:6]}\n{sequence[6:]}\n" for name, sequence in PROTEINS.items())
    )
    from_file = protein_explainer.explain(path)
    from_strings = protein_explainer.explain(list(PROTEINS.values()), ids=list(PROTEINS))
    assert from_file.ids == list(PROTEINS) and from_file.sequences == list(PROTEINS.values())
    assert from_file.lengths == [10, 10, 10, 11] and from_file.relevance.shape == (4, 20, 11)
    for name in ("relevance", "per_position", "explained", "delta"):
        torch.testing.assert_close(getattr(from_file, name), getattr(from_strings, name), rtol=0, atol=0)
    torch.testing.assert_close(
        from_file.relevance.sum((1, 2)) + from_file.delta, from_file.explained, rtol=0, atol=1e-6
    )
    # a protein run: the alphabet is recorded, the rows are the direct per-position relevance
    explain_dataset(protein_explainer, path, tmp_path / "out", shard_size=3, progress=False)
    rows = read_results(tmp_path / "out")
    assert read_manifest(tmp_path / "out")["settings"]["alphabet"] == PROTEIN
    for i, values in enumerate(rows.relevance):
        np.testing.assert_allclose(
            values, from_file.per_position[i, : from_file.lengths[i]].numpy(), rtol=0, atol=1e-12
        )
    bad = tmp_path / "bad.fa"
    bad.write_text(">ok\nMNKA\n>odd\nMNBA\n")
    with pytest.raises(ValueError, match="odd: 'B' at position 3 is not in the alphabet"):
        protein_explainer.explain(bad)


# -- no dispatch on class names ------------------------------------------------------------------------
#: Packages that find explainers through the registry and the contract, never by their class.
CONTRACT_USERS = ("run", "commands", "report")
NAME_ATTRIBUTES = ("__name__", "__qualname__")
#: ``.__name__`` uses outside an f-string that only word a message, by file and source text.
#: report/__init__.py: the fallback ``kind`` of an explainer without one, used only in the error
#: message of ``write_report`` (the writer is found through ``explainer.report``).
MESSAGE_ONLY = {("report/__init__.py", 'getattr(explainer, "kind", type(explainer).__name__)')}


def _name_attributes(node: ast.AST) -> list[ast.Attribute]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Attribute) and n.attr in NAME_ATTRIBUTES]


def _in_fstring(tree: ast.AST) -> set[int]:
    """Ids of the class-name attributes that are formatted values of an f-string."""
    return {id(a) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for a in _name_attributes(node)}


def _name_uses(source: str, where: str) -> tuple[list[str], list[str]]:
    """(choices, unexplained) in the source of one file (``where``, relative to the package): class
    names in comparisons, lookups or matches; class names used outside an f-string and outside
    :data:`MESSAGE_ONLY`."""
    tree = ast.parse(source)
    choices = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            parts = [node]
        elif isinstance(node, ast.Subscript):
            parts = [node.slice]
        elif isinstance(node, ast.Match):
            parts = [node.subject]
        elif isinstance(node, ast.Dict):
            parts = [key for key in node.keys if key is not None]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "startswith", "endswith", "__contains__")
        ):
            parts = node.args
        else:
            continue
        for part in parts:
            for found in _name_attributes(part):
                choices.append(f"{where}:{found.lineno}: {ast.get_source_segment(source, node)}")
    formatted = _in_fstring(tree)
    unexplained = []
    for found in _name_attributes(tree):
        if id(found) in formatted:
            continue
        line = source.splitlines()[found.lineno - 1]
        if not any(where == file and text in line for file, text in MESSAGE_ONLY):
            unexplained.append(f"{where}:{found.lineno}: {line.strip()}")
    return choices, unexplained


def test_no_dispatch_on_class_names():
    choices, unexplained = [], []
    for package in CONTRACT_USERS:
        for path in sorted((ROOT / "lrp_domains" / package).rglob("*.py")):
            found = _name_uses(path.read_text(), path.relative_to(ROOT / "lrp_domains").as_posix())
            choices += found[0]
            unexplained += found[1]
    assert not choices, "behaviour chosen by a class name:\n" + "\n".join(sorted(choices))
    assert not unexplained, "class names used outside messages (add to MESSAGE_ONLY if only worded):\n" + "\n".join(
        unexplained
    )


def test_the_class_name_scan_catches_dispatch():
    """The scan itself: a comparison, a lookup and an unexplained use are found; messages are not."""
    code = (
        'if type(explainer).__name__ == "TextExplainer":\n    pass\n'
        "writer = WRITERS[type(explainer).__name__]\n"
        "name = explainer.__class__.__qualname__\n"
        'raise TypeError(f"not {type(explainer).__name__}")\n'
    )
    choices, unexplained = _name_uses(code, "run/fake.py")
    assert sorted(int(c.split(":")[1]) for c in choices) == [1, 3]
    assert sorted(int(u.split(":")[1]) for u in unexplained) == [1, 3, 4]
