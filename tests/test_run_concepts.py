"""Concept relevance in dataset runs and relevance maximization over a run's shards."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from lrp_domains.bench.data.synthetic import make_dataset, write_fasta
from lrp_domains.bio import SequenceExplainer
from lrp_domains.cli import app
from lrp_domains.errors import InputError
from lrp_domains.latent import concept_relevance
from lrp_domains.run import explain_dataset, read_results, reference_examples


@pytest.fixture(scope="module")
def explainer():
    return SequenceExplainer.default()


def _fasta(path, n=23, seed=5):
    return write_fasta(path, make_dataset(n, seed=seed))


def test_run_concepts_equal_direct_concept_relevance(tmp_path, explainer):
    path = _fasta(tmp_path / "in.fa")
    explain_dataset(explainer, path, tmp_path / "out", shard_size=6, progress=False, concepts="4")
    rows = read_results(tmp_path / "out")
    values = np.stack(rows.concepts.map(np.asarray).to_list())
    data = make_dataset(23, seed=5)
    direct = concept_relevance(explainer.model, data.onehot.float(), "4", composite=explainer.composite)
    assert values.shape == (23, 64)
    np.testing.assert_allclose(values, direct.double().numpy(), rtol=1e-5, atol=1e-7)
    # relevance maximization, against a brute-force top-k over the whole table
    found = reference_examples(tmp_path / "out", top=3)
    assert len(found) == 64 * 3
    shares = values.sum(0) / values.sum()
    for concept in (0, 17, 63):
        mine = found[found.concept == concept].sort_values("rank")
        expected = np.argsort(-values[:, concept], kind="stable")[:3]
        assert mine.row.tolist() == expected.tolist()
        assert mine.id.tolist() == rows.id.iloc[expected].tolist()
        np.testing.assert_allclose(mine.relevance, values[expected, concept])
        np.testing.assert_allclose(mine.share, shares[concept])


def test_runs_without_concepts_write_empty_lists_and_say_so(tmp_path, explainer):
    path = _fasta(tmp_path / "in.fa", n=5)
    explain_dataset(explainer, path, tmp_path / "out", shard_size=5, progress=False)
    assert read_results(tmp_path / "out").concepts.map(len).tolist() == [0] * 5
    with pytest.raises(InputError, match="concepts=LAYER"):
        reference_examples(tmp_path / "out")


def test_unknown_layer_is_refused_before_anything_is_written(tmp_path, explainer):
    path = _fasta(tmp_path / "in.fa", n=5)
    with pytest.raises(InputError, match="concepts=conv9: the model has no module"):
        explain_dataset(explainer, path, tmp_path / "out", progress=False, concepts="conv9")
    assert not (tmp_path / "out").exists()


def test_cli_reference_examples(tmp_path):
    path = _fasta(tmp_path / "in.fa", n=12)
    runner = CliRunner()
    done = runner.invoke(
        app,
        [
            "run",
            "sequences",
            str(path),
            "--out",
            str(tmp_path / "out"),
            "--shard-size",
            "5",
            "--option",
            "concepts=0",
            "--no-progress",
        ],
    )
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["run", "reference-examples", str(tmp_path / "out"), "--top", "2"])
    assert done.exit_code == 0, done.output
    table = (tmp_path / "out" / "reference_examples.tsv").read_text().splitlines()
    assert table[0].split("\t") == ["concept", "rank", "id", "row", "relevance", "share"]
    assert len(table) == 1 + 64 * 2
    done = runner.invoke(app, ["run", "reference-examples", str(tmp_path / "out"), "--top", "0"])
    assert done.exit_code != 0 and "error: top must be >= 1" in done.output
