"""Numbers that are not numbers: an output softmax (relevance of a probability held constant is
zero), reports over NaN/Inf explanations, and expression values beyond the model's dtype."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata
import models as M
import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import one_line_error, run
from torch import nn
from torch.nn import functional as F

import lrp_domains.bio  # noqa: F401  (registers the genomics composite)
from lrp_domains.core.engine.attribution import explain
from lrp_domains.core.engine.coverage import LRPCoverageError
from lrp_domains.core.engine.finite import first_nonfinite_parameter
from lrp_domains.run import read_results

SOFTMAX_WARNING = "the model's output is a softmax"


def _onehot(n: int = 5, length: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.one_hot(torch.randint(0, 4, (n, length), generator=generator), 4).permute(0, 2, 1).float()


def _fasta(path: Path, records: dict[str, str]) -> Path:
    path.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records.items()))
    return path


def _random_dna(n: int, seed: int = 0) -> str:
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), n))


def _softmax_warnings(caught) -> list:
    return [w for w in caught if SOFTMAX_WARNING in str(w.message)]


# -- A: an output softmax ------------------------------------------------------------------------
class EndsInSoftmax(nn.Module):
    """``net`` followed by a softmax written in one of the ways users write it."""

    def __init__(self, net: nn.Module, how: str) -> None:
        super().__init__()
        self.net = net
        self.how = how
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if self.how == "torch":
            return torch.softmax(logits, -1)
        if self.how == "functional":
            return F.softmax(logits, dim=-1)
        if self.how == "method":
            return logits.softmax(-1)
        return self.softmax(logits)


class AttentionPooling(nn.Module):
    """A softmax inside the model (attention pooling over positions), not at its output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 5, padding=2)
        self.score = nn.Conv1d(6, 1, 1)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        weights = torch.softmax(self.score(h), -1)
        return self.head((h * weights).sum(-1))


@pytest.mark.parametrize("composite", ["genomics", "epsilon"])
@pytest.mark.parametrize("how", ["torch", "functional", "method", "module"])
def test_an_output_softmax_is_explained_through_its_logits(composite, how):
    net = M.cnn1d(batchnorm=False)
    x = _onehot()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = explain(EndsInSoftmax(net, how), x, composite=composite, batch_size=2, check_delta=False)
    plain = explain(net, x, composite=composite, check_delta=False)
    assert len(_softmax_warnings(caught)) == 1, [str(w.message) for w in caught]
    assert "logits" in str(_softmax_warnings(caught)[0].message)
    assert wrapped.relevance.abs().sum() > 0
    torch.testing.assert_close(wrapped.relevance, plain.relevance)
    torch.testing.assert_close(wrapped.explained, plain.explained)
    assert torch.equal(wrapped.target, plain.target)


def test_strict_mode_accepts_an_output_softmax_and_still_names_one_inside():
    x = _onehot()
    with pytest.warns(UserWarning, match=SOFTMAX_WARNING):
        explain(
            EndsInSoftmax(M.cnn1d(batchnorm=False), "torch"), x, composite="epsilon", strict=True, check_delta=False
        )
    with pytest.raises(LRPCoverageError, match="softmax"):
        explain(AttentionPooling(), x, composite="epsilon", strict=True, check_delta=False)


def test_a_sequential_ending_in_softmax_explains_its_logits():
    mlp = M.mlp()
    x = torch.randn(6, 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = explain(nn.Sequential(*mlp, nn.Softmax(-1)), x, batch_size=4, check_delta=False)
    plain = explain(mlp, x, check_delta=False)
    assert len(_softmax_warnings(caught)) == 1
    assert wrapped.relevance.abs().sum() > 0
    torch.testing.assert_close(wrapped.relevance, plain.relevance)
    torch.testing.assert_close(wrapped.output, plain.output)


def test_a_softmax_inside_the_model_or_in_the_output_hook_is_left_alone():
    model = AttentionPooling()
    x = _onehot()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inside = explain(model, x, composite="genomics", check_delta=False)
        hooked = explain(
            model, x, composite="genomics", check_delta=False, output=lambda raw, batch: torch.softmax(raw, -1)
        )
    assert not _softmax_warnings(caught)
    assert inside.relevance.abs().sum() > 0
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(inside.output, logits)
    torch.testing.assert_close(hooked.output, torch.softmax(logits, -1))  # the hook's probabilities are explained


SOFTMAX_FACTORY = """
import models
import torch
from torch import nn


class Probabilities(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = models.cnn1d(batchnorm=False)

    def forward(self, x):
        return torch.softmax(self.net(x), -1)


def factory():
    torch.manual_seed(0)
    return Probabilities()
"""


@pytest.mark.filterwarnings(f"ignore:{SOFTMAX_WARNING}")
def test_run_sequences_explains_the_logits_of_a_softmax_model(tmp_path, monkeypatch):
    (tmp_path / "softmax_models.py").write_text(SOFTMAX_FACTORY)
    monkeypatch.chdir(tmp_path)
    fasta = _fasta(tmp_path / "in.fa", {f"seq{i}": _random_dna(40, i) for i in range(4)})
    result = run(
        "run", "sequences", fasta, "--out", tmp_path / "out", "--model", "softmax_models:factory", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    rows = read_results(tmp_path / "out")
    assert len(rows) == 4
    assert all(np.abs(np.asarray(r, dtype=float)).sum() > 0 for r in rows.relevance)


# -- B: reports over explanations that are NaN or Inf --------------------------------------------
FACTORIES = """
import models
import torch
from torch import nn


class LogInput(nn.Module):
    \"\"\"log1p of the expression first: a negative value gives that sample NaN.\"\"\"

    def __init__(self):
        super().__init__()
        self.net, self.genes, self.classes = models.expression_mlp()

    def forward(self, x):
        return self.net(torch.log1p(x))


def log_input():
    model = LogInput()
    return model, model.genes, model.classes


def nan_weight():
    model, genes, classes = models.expression_mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    return model, genes, classes


class NeedsAnA(nn.Module):
    \"\"\"Adds log(number of A): a record without an A gets -Inf.\"\"\"

    def __init__(self):
        super().__init__()
        self.net = models.cnn1d(batchnorm=False)

    def forward(self, x):
        return self.net(x) + torch.log(x[:, :1].sum(-1))


def needs_an_a():
    torch.manual_seed(0)
    return NeedsAnA()


def cnn_nan_weight():
    torch.manual_seed(0)
    model = models.cnn1d(batchnorm=False)
    with torch.no_grad():
        model[0].weight[1, 2, 3] = float("nan")
    return model
"""


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "nonfinite_models.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)
    return "nonfinite_models"


def _counts_csv(tmp_path: Path, negative: dict[str, str] | None = None) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        np.abs(rng.normal(size=(9, 12))), columns=M.EXPRESSION_GENES, index=[f"s{i}" for i in range(9)]
    )
    for sample, gene in (negative or {}).items():
        frame.loc[sample, gene] = -2.0
    frame.to_csv(tmp_path / "counts.csv")
    return tmp_path / "counts.csv"


def test_first_nonfinite_parameter_names_parameters_then_buffers():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert first_nonfinite_parameter(model) is None
    model[1].running_var[2] = float("inf")
    assert first_nonfinite_parameter(model) == "1.running_var"
    with torch.no_grad():
        model[2].bias[1] = float("nan")
    assert first_nonfinite_parameter(model) == "2.bias"


def test_gene_report_leaves_out_samples_that_are_not_finite(tmp_path, factories):
    data = _counts_csv(tmp_path, {"s2": "G3", "s5": "G7"})
    out = tmp_path / "o"
    with pytest.warns(UserWarning, match=r"2 of 9 rows have a status other than ok \(non-finite 2"):
        result = run(
            "bio", "genes", data, "--out", out, "--model", f"{factories}:log_input", "--no-progress", "--top", "5"
        )
    assert result.exit_code == 0, result.output
    top = pd.read_csv(out / "top_genes.csv")
    assert len(top) and np.isfinite(top.mean_relevance).all() and np.isfinite(top.fraction_positive).all()
    relevance = pd.read_parquet(out / "relevance.parquet")  # the report: the usable samples
    assert len(relevance) == 7 and np.isfinite(relevance.to_numpy()).all()
    rows = read_results(out / "run")  # the run: every sample, the two marked
    assert rows.set_index("id").status[["s2", "s5"]].tolist() == ["non-finite"] * 2
    page = (out / "report.html").read_text()
    assert "2 cells of the run are left out (status non-finite 2): s2, s5" in page and ">nan<" not in page.lower()


def test_genes_command_fails_in_one_line_when_every_output_is_nan(tmp_path, factories):
    out = tmp_path / "o"
    result = run(
        "bio", "genes", _counts_csv(tmp_path), "--out", out, "--model", f"{factories}:nan_weight", "--no-progress"
    )
    one_line_error(
        result, "every output was NaN or Inf", "all 9 cells", "'0.weight' holds NaN or Inf (1 of 192 values)"
    )
    assert not (out / "report.html").exists() and set(read_results(out / "run").status) == {"non-finite"}


@pytest.mark.filterwarnings("ignore:no LRP rule covers")
def test_sequence_report_leaves_out_records_that_are_not_finite(tmp_path, factories):
    records = {f"seq{i}": _random_dna(40, i) for i in range(4)}
    records["no_a"] = "CGT" * 13
    fasta = _fasta(tmp_path / "in.fa", records)
    out = tmp_path / "o"
    with pytest.warns(UserWarning, match=r"1 of 5 rows have a status other than ok \(non-finite 1"):
        result = run(
            "bio",
            "sequences",
            fasta,
            "--out",
            out,
            "--model",
            f"{factories}:needs_an_a",
            "--motifs",
            "none",
            "--no-progress",
        )
    assert result.exit_code == 0, result.output
    logos = sorted(p.stem for p in (out / "logos").glob("*.png"))
    assert logos == ["seq0", "seq1", "seq2", "seq3"]
    seqlets = pd.read_csv(out / "seqlets.csv")
    assert "no_a" not in set(seqlets.id)
    assert "no_a" not in set(pd.read_parquet(out / "relevance.parquet").id)  # the report shows usable records
    assert read_results(out / "run").set_index("id").status["no_a"] == "non-finite"  # the run keeps every row
    page = (out / "report.html").read_text()
    assert "1 records of the run are left out (status non-finite 1): no_a" in page


def test_seqlets_are_called_over_the_finite_records_only():
    from lrp_domains.bio import SequenceExplainer, call_seqlets

    explainer = SequenceExplainer(M.cnn1d(batchnorm=False), composite="epsilon")
    result = explainer.explain([_random_dna(60, i) for i in range(6)])
    assert len(call_seqlets(result, null="quantile"))
    result.relevance[2] = float("nan")
    result.channel_relevance[2] = float("nan")
    broken = call_seqlets(result, null="quantile")  # before: a NaN threshold, no seqlet for any record
    assert len(broken) and "seq2" not in set(broken.id) and np.isfinite(broken.threshold).all()
    result.relevance[:] = float("nan")
    result.channel_relevance[:] = float("nan")
    assert call_seqlets(result).empty


def test_sequences_command_fails_in_one_line_when_every_output_is_nan(tmp_path, factories):
    out = tmp_path / "o"
    fasta = _fasta(tmp_path / "in.fa", {f"seq{i}": _random_dna(40, i) for i in range(3)})
    result = run(
        "bio",
        "sequences",
        fasta,
        "--out",
        out,
        "--model",
        f"{factories}:cnn_nan_weight",
        "--motifs",
        "none",
        "--no-progress",
    )
    one_line_error(
        result, "every output was NaN or Inf", "all 3 records", "'0.weight' holds NaN or Inf (1 of 160 values)"
    )
    assert not (out / "report.html").exists() and not (out / "lrp-domains.json").exists()  # no report
    assert set(read_results(out / "run").status) == {"non-finite"}  # the run's rows say what happened


# -- C: expression values beyond the model's dtype ------------------------------------------------
def _big_value_files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(9, 12)), columns=M.EXPRESSION_GENES, index=[f"c{i}" for i in range(9)])
    frame.loc["c3", "G1"] = 1e39
    frame.to_csv(tmp_path / "big.csv")
    anndata.AnnData(
        frame.to_numpy(), obs=pd.DataFrame(index=frame.index), var=pd.DataFrame(index=frame.columns)
    ).write_h5ad(tmp_path / "big.h5ad")
    return tmp_path / "big.csv", tmp_path / "big.h5ad"


@pytest.mark.parametrize("command", [("bio", "genes"), ("run", "genes")])
def test_a_value_beyond_float32_in_an_h5ad_is_refused_as_in_a_csv(tmp_path, command):
    csv_path, h5ad_path = _big_value_files(tmp_path)
    for path in (csv_path, h5ad_path):
        out = tmp_path / f"o_{path.suffix[1:]}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflow in the CSV reader's cast
            result = run(*command, path, "--out", out, "--model", "models:expression_mlp", "--no-progress")
        one_line_error(result, "G1", "c3")
        assert not (out / "report.html").exists() and not list(out.glob("*.parquet"))


def test_a_float64_model_takes_values_beyond_float32():
    from lrp_domains.bio import ExpressionExplainer

    model, genes, classes = M.expression_mlp()
    values = np.random.default_rng(0).normal(size=(3, 12))
    values[1, 4] = 1e39
    with pytest.raises(ValueError, match=r"float32.*genes G4 of samples 1"):
        ExpressionExplainer(model, genes, classes).align(values)
    aligned, _ = ExpressionExplainer(model.double(), genes, classes).align(values)
    assert aligned[1, 4] == 1e39


# -- runs: a status per row, one warning, and a run with no usable row fails ------------------------
@pytest.mark.filterwarnings("ignore:no LRP rule covers")
def test_a_run_marks_non_finite_rows_and_counts_them_in_one_warning(tmp_path, factories):
    from lrp_domains.run import export_modisco, read_manifest

    records = {f"seq{i}": _random_dna(40, i) for i in range(4)}
    records["no_a"] = "CGT" * 13 + "C"
    fasta = _fasta(tmp_path / "in.fa", records)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"1 of 5 rows have a status other than ok") as caught:
        result = run(
            "run",
            "sequences",
            fasta,
            "--out",
            out,
            "--model",
            f"{factories}:needs_an_a",
            "--shard-size",
            "2",
            "--no-progress",
        )
    assert result.exit_code == 0, result.output
    assert len([w for w in caught if "status other than ok" in str(w.message)]) == 1
    rows = read_results(out)
    assert rows.set_index("id").status.to_dict() == {**{f"seq{i}": "ok" for i in range(4)}, "no_a": "non-finite"}
    assert read_manifest(out)["complete"]
    ohe, attr = export_modisco(out)  # tfmodisco never sees the NaN row
    assert np.load(attr).shape[0] == 4 and np.isfinite(np.load(attr)).all()


def test_a_run_where_no_row_is_finite_fails_naming_the_parameter(tmp_path, factories):
    fasta = _fasta(tmp_path / "in.fa", {f"seq{i}": _random_dna(40, i) for i in range(3)})
    result = run(
        "run", "sequences", fasta, "--out", tmp_path / "run", "--model", f"{factories}:cnn_nan_weight", "--no-progress"
    )
    one_line_error(result, "every output was NaN or Inf", "all 3 records", "parameter '0.weight' holds NaN or Inf")
