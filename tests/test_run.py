"""Dataset-scale runs (``lrp_domains.run``): sources, shards, manifest, resume, faults, Ray, CLI."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import text_models as T
from Bio import SeqIO
from models import EXPRESSION_CLASSES, EXPRESSION_GENES, expression_mlp
from typer.testing import CliRunner

from lrp_domains.bench.data.synthetic import make_dataset, write_fasta
from lrp_domains.bio import ExpressionExplainer, SequenceExplainer
from lrp_domains.bio.cells.readers import H5adCells
from lrp_domains.cli import app
from lrp_domains.files import FastaRecords, TableRecords
from lrp_domains.run import explain_dataset, export_modisco, iter_shards, read_manifest, read_results
from lrp_domains.text import TextExplainer

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "a good film",
    "bad, boring and long",
    "I loved it",
    "not great",
    'the plot, "sadly", drags',
    "fine",
    "an utter mess",
    "charming and warm",
    "so-so",
    "the best of the year",
    "dull",
]
TEXT_COLUMNS = [
    "row",
    "id",
    "explained",
    "delta",
    "text",
    "prediction",
    "target",
    "tokens",
    "token_relevance",
    "special",
    "words",
    "word_relevance",
    "other_relevance",
    "truncated",
    "token_ids",
    "token_spans",
    "word_spans",
    "token_word",
    "probabilities",
    "embedding_names",
    "embedding_relevance",
    "ledger",
    "status",
]
SEQUENCE_COLUMNS = [
    "row",
    "id",
    "explained",
    "delta",
    "sequence",
    "relevance",
    "hypothetical",
    "concepts",
    "ledger",
    "status",
]
GENE_COLUMNS = ["row", "id", "explained", "delta", "prediction", "target", "output", "relevance", "ledger", "status"]


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_explainer():
    return TextExplainer(T.encoder("bert", num_labels=2), T.wordpiece_tokenizer(), labels=["negative", "positive"])


@pytest.fixture(scope="module")
def sequence_explainer():
    return SequenceExplainer.default()


@pytest.fixture(scope="module")
def gene_explainer():
    model, genes, classes = expression_mlp()
    return ExpressionExplainer(model, genes, classes)


def _fasta(path: Path, n: int = 30, line_width: int = 60, seed: int = 3) -> Path:
    return write_fasta(path, make_dataset(n, seed=seed), line_width=line_width)


def _h5ad(path: Path, n: int = 23) -> tuple[Path, anndata.AnnData]:
    rng = np.random.default_rng(0)
    genes = list(reversed(EXPRESSION_GENES)) + ["EXTRA"]  # other order, one gene the model does not use
    data = anndata.AnnData(
        rng.normal(size=(n, len(genes))).astype(np.float32),
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(n)]),
        var=pd.DataFrame(index=genes),
    )
    data.write_h5ad(path)
    return path, data


# -- sources ---------------------------------------------------------------------------------------
def _all_rows(reader, shard_size) -> tuple[list[str], list]:
    ids, items = [], []
    for shard in reader.shards(shard_size):
        shard_ids, shard_items = reader.read(shard)
        assert len(shard_ids) == shard.size
        ids += shard_ids
        items += list(shard_items) if not isinstance(shard_items, pd.DataFrame) else [shard_items]
    return ids, items


@pytest.mark.parametrize("shard_size", [1, 4, 11, 50])
def test_text_sources_read_every_row_once_in_order(tmp_path, shard_size):
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(len(TEXTS))], "text": TEXTS, "label": range(len(TEXTS))})
    (tmp_path / "in.txt").write_text("\n".join(TEXTS[:5]) + "\n\n" + "\n".join(TEXTS[5:]) + "\n")  # a blank line
    frame.to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "in.tsv").write_text("id\ttext\tlabel\n" + "".join(f"r{i}\t{t}\t{i}\n" for i, t in enumerate(TEXTS)))
    frame.to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    pq.write_table(pa.Table.from_pandas(frame[["text", "label"]]), tmp_path / "in.parquet", row_group_size=3)
    for name, expected_ids in [
        ("in.txt", None),
        ("in.csv", list(frame.id)),
        ("in.tsv", list(frame.id)),
        ("in.jsonl", list(frame.id)),
        ("in.parquet", None),
    ]:
        reader = TableRecords(tmp_path / name)
        shards = reader.shards(shard_size)
        assert shards[-1].stop == len(TEXTS)
        assert len(shards) == -(-len(TEXTS) // shard_size)
        ids, texts = _all_rows(reader, shard_size)
        assert texts == TEXTS, name
        assert ids == (expected_ids or [str(i) for i in range(len(TEXTS))]), name


@pytest.mark.parametrize("gz", [False, True])
def test_fasta_source_matches_biopython(tmp_path, gz):
    path = _fasta(tmp_path / "in.fa", n=17, line_width=70)
    if gz:
        gz_path = tmp_path / "in.fa.gz"
        gz_path.write_bytes(gzip.compress(path.read_bytes()))
        path = gz_path
    opener = gzip.open if gz else open
    with opener(path, "rt") as handle:
        records = list(SeqIO.parse(handle, "fasta"))
    reader = FastaRecords(path)
    shards = reader.shards(5)
    assert shards[-1].stop == 17 and len(shards) == 4
    ids, sequences = _all_rows(reader, 5)
    assert ids == [r.id for r in records]
    assert sequences == [str(r.seq) for r in records]


def test_h5ad_source_reads_cells_in_backed_mode(tmp_path):
    path, data = _h5ad(tmp_path / "in.h5ad")
    reader = H5adCells(path)
    assert reader.shards(10)[-1].stop == 23 and reader.genes == list(data.var_names)
    ids, blocks = _all_rows(reader, 10)
    assert ids == list(data.obs_names)
    joined = pd.concat(blocks)
    np.testing.assert_array_equal(joined.to_numpy(), data.X)
    assert list(joined.columns) == list(data.var_names)


def test_bad_inputs_say_what_is_wrong(tmp_path):
    pd.DataFrame({"review": ["x"]}).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(ValueError, match=r"no column 'text'.*\['review'\].*--column"):
        TableRecords(tmp_path / "in.csv")
    (tmp_path / "in.xlsx").write_text("")
    with pytest.raises(ValueError, match="not a file type"):
        TableRecords(tmp_path / "in.xlsx")
    with pytest.raises(ValueError, match="no such input file"):
        TableRecords(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        TableRecords(tmp_path / "in.csv", column="review").shards(0)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("in.jsonl", '{"text": "fine"}\n\n{"text": "ok"}\nnot json\n', r", line 4: not valid JSON"),
        ("in.jsonl", '{"text": "fine"}\n{"label": 1}\n', r", row 1 \(line 2\): has no key 'text'"),
        ("in.jsonl", '{"text": "fine"}\n{"text": null}\n', r", row 1 \(line 2\): is null"),
        ("in.csv", "label,text\n1,fine\n0\n", r", row 1 \(line 3\): 1 fields where the header has 2"),
    ],
)
def test_broken_rows_are_named(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    reader = TableRecords(tmp_path / name)
    with pytest.raises(ValueError, match=rf"{name}{message}"):
        reader.read(reader.shards(10)[0])


def test_null_parquet_value_is_named(tmp_path):
    pq.write_table(pa.table({"text": ["fine", "ok", None]}), tmp_path / "in.parquet")
    reader = TableRecords(tmp_path / "in.parquet")
    shards = reader.shards(2)
    reader.read(shards[0])
    with pytest.raises(ValueError, match=r"in.parquet, row 2: is null"):
        reader.read(shards[1])


def test_bad_row_error_names_its_shard_and_keeps_finished_shards(tmp_path, text_explainer):
    pd.DataFrame({"text": ["good", "bad", "fine", "", "ok"]}).to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "out"
    with pytest.raises(
        ValueError,
        match=r"in.csv, shard 1 \(rows 2 to 3, ids '2' to '3'\): row 3 \(id '3'\) "
        r"is an empty text.*Finished shards are kept",
    ):
        explain_dataset(text_explainer, tmp_path / "in.csv", out, shard_size=2, progress=False)
    assert _shard_files(out) == ["shard-00000.parquet"]
    assert read_results(out).text.tolist() == ["good", "bad"]


# -- one engine, three kinds -----------------------------------------------------------------------
def _shard_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("shard-"))


def test_text_run_equals_direct_explanation(tmp_path, text_explainer):
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    manifest_path = explain_dataset(text_explainer, tmp_path / "in.txt", tmp_path / "out", shard_size=4, progress=False)
    out = tmp_path / "out"
    assert _shard_files(out) == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    manifest = json.loads(manifest_path.read_text())
    assert manifest["complete"] and manifest["input"]["rows"] == len(TEXTS) and manifest["input"]["shards"] == 3
    assert manifest["settings"]["composite"] == "attnlrp" and manifest["settings"]["kind"] == "text"
    assert "torch" in manifest["versions"] and "lrp-domains" in manifest["versions"]
    assert [pq.read_schema(out / f).names for f in _shard_files(out)] == [TEXT_COLUMNS] * 3
    rows = read_results(out)
    direct = text_explainer.explain(TEXTS)
    assert list(rows.row) == list(range(len(TEXTS))) and list(rows.text) == TEXTS
    for row, expected in zip(rows.itertuples(), direct):
        assert list(row.tokens) == expected.tokens and list(row.words) == expected.words
        assert row.prediction == expected.prediction and row.target == expected.target
        np.testing.assert_allclose(row.token_relevance, expected.token_relevance.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(row.word_relevance, expected.word_relevance.numpy(), rtol=1e-10, atol=1e-12)
        # conservation holds for every stored row: tokens + other embeddings = explained output
        assert np.sum(row.token_relevance) + row.other_relevance == pytest.approx(
            row.explained - row.delta, rel=1e-6, abs=1e-9
        )
    assert sum(len(s) for s in iter_shards(out)) == len(TEXTS)


def test_sequence_run_equals_direct_explanation(tmp_path, sequence_explainer):
    path = _fasta(tmp_path / "in.fa", n=30)
    explain_dataset(sequence_explainer, path, tmp_path / "out", shard_size=8, progress=False)
    out = tmp_path / "out"
    assert len(_shard_files(out)) == 4
    assert pq.read_schema(out / "shard-00003.parquet").names == SEQUENCE_COLUMNS
    rows = read_results(out)
    direct = sequence_explainer.explain(str(path))
    assert list(rows.id) == direct.ids and list(rows.sequence) == direct.sequences
    relevance = np.stack(rows.relevance.map(np.asarray).to_list())
    np.testing.assert_allclose(relevance, direct.per_position.double().numpy(), rtol=1e-5, atol=1e-7)
    hypothetical = np.stack(rows.hypothetical.map(np.asarray).to_list()).reshape(30, 4, -1)
    np.testing.assert_allclose(hypothetical, direct.hypothetical.double().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rows.explained, direct.explained.numpy(), rtol=1e-5)


def test_gene_run_equals_direct_explanation(tmp_path, gene_explainer):
    path, data = _h5ad(tmp_path / "in.h5ad")
    explain_dataset(gene_explainer, path, tmp_path / "out", shard_size=10, progress=False)
    out = tmp_path / "out"
    assert read_manifest(out)["settings"]["genes"] == EXPRESSION_GENES
    assert pq.read_schema(out / "shard-00000.parquet").names == GENE_COLUMNS
    rows = read_results(out)
    direct = gene_explainer.explain(data)
    assert list(rows.id) == list(data.obs_names)
    assert list(rows.prediction) == list(direct.prediction)
    relevance = np.stack(rows.relevance.map(np.asarray).to_list())
    np.testing.assert_allclose(relevance, direct.relevance[EXPRESSION_GENES].to_numpy(), rtol=1e-5, atol=1e-7)
    assert set(rows.prediction) <= set(EXPRESSION_CLASSES)


def test_explainer_must_fit_the_input(tmp_path, text_explainer):
    path = _fasta(tmp_path / "in.fa", n=3)
    with pytest.raises(ValueError, match="in.fa: not a file type a text run reads"):
        explain_dataset(text_explainer, path, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="engine must be 'local' or 'ray'"):
        explain_dataset(SequenceExplainer.default(), path, tmp_path / "o2", engine="spark", progress=False)


# -- resume ----------------------------------------------------------------------------------------
def test_resume_skips_finished_shards(tmp_path, sequence_explainer, monkeypatch):
    import lrp_domains.run.dataset as dataset

    path = _fasta(tmp_path / "in.fa", n=20)
    out = tmp_path / "out"
    explain_dataset(sequence_explainer, path, out, shard_size=5, progress=False)
    first = read_results(out)
    times = {f: (out / f).stat().st_mtime_ns for f in _shard_files(out)}
    calls = []
    real = dataset.explain_shard
    monkeypatch.setattr(dataset, "explain_shard", lambda *a, **k: calls.append(a[2].start) or real(*a, **k))
    explain_dataset(sequence_explainer, path, out, shard_size=5, progress=False)
    assert calls == [] and {f: (out / f).stat().st_mtime_ns for f in _shard_files(out)} == times
    # forget shard 2 (as if the run had been killed before it): only it is recomputed
    manifest = read_manifest(out)
    del manifest["shards"]["2"]
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    explain_dataset(sequence_explainer, path, out, shard_size=5, progress=False)
    assert calls == [10]
    pd.testing.assert_frame_equal(read_results(out), first)
    assert read_manifest(out)["complete"]


def test_resume_refuses_other_input_or_settings(tmp_path, sequence_explainer):
    path = _fasta(tmp_path / "in.fa", n=12)
    out = tmp_path / "out"
    explain_dataset(sequence_explainer, path, out, shard_size=5, progress=False)
    before = {f: (out / f).read_bytes() for f in _shard_files(out) + ["manifest.json"]}
    with pytest.raises(ValueError, match=r"settings\.composite: 'genomics' before, 'epsilon' now.*--no-resume"):
        explain_dataset(SequenceExplainer.default(composite="epsilon"), path, out, shard_size=5, progress=False)
    with pytest.raises(ValueError, match=r"settings\.shard_size: 5 before, 4 now"):
        explain_dataset(sequence_explainer, path, out, shard_size=4, progress=False)
    with pytest.raises(ValueError, match=r"settings\.options\.rc_average"):
        explain_dataset(sequence_explainer, path, out, shard_size=5, progress=False, rc_average=True)
    _fasta(path, n=12, seed=4)  # same name, other content
    with pytest.raises(ValueError, match=r"input\.sha256"):
        explain_dataset(sequence_explainer, path, out, shard_size=5, progress=False)
    # refusals leave what was written untouched
    assert {f: (out / f).read_bytes() for f in _shard_files(out) + ["manifest.json"]} == before
    # --no-resume starts over
    explain_dataset(sequence_explainer, path, out, shard_size=4, resume=False, progress=False)
    assert _shard_files(out) == [f"shard-{i:05d}.parquet" for i in range(3)]
    assert read_manifest(out)["settings"]["shard_size"] == 4


def test_stale_temporary_shard_is_removed_and_not_read(tmp_path, gene_explainer):
    path, _ = _h5ad(tmp_path / "in.h5ad", n=8)
    out = tmp_path / "out"
    out.mkdir()
    (out / "shard-00000.parquet.tmp").write_bytes(b"half a shard")
    explain_dataset(gene_explainer, path, out, shard_size=5, progress=False)
    assert not list(out.glob("shard-*.tmp"))
    assert len(read_results(out)) == 8


def test_refusals_before_writing_never_touch_an_earlier_run(tmp_path, sequence_explainer):
    path = _fasta(tmp_path / "in.fa", n=10)
    out = tmp_path / "out"
    explain_dataset(sequence_explainer, path, out, shard_size=5, progress=False)
    (out / "notes.tmp").write_text("the user's own file")  # not ours: must survive
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    with pytest.raises(ValueError, match="engine must be 'local' or 'ray', got 'spark'"):
        explain_dataset(sequence_explainer, path, out, resume=False, engine="spark", progress=False)
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty.fa holds no FASTA records"):
        explain_dataset(sequence_explainer, empty, out, resume=False, progress=False)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    explain_dataset(sequence_explainer, path, out, shard_size=5, progress=False)  # resume: nothing to do
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    a_file = tmp_path / "results"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="results is a file; give a folder"):
        explain_dataset(sequence_explainer, path, a_file, progress=False)
    assert a_file.read_text() == "x"


# -- tfmodisco-lite export -------------------------------------------------------------------------
def test_export_modisco_equals_the_direct_export(tmp_path, sequence_explainer):
    from lrp_domains.bio import to_modisco

    path = _fasta(tmp_path / "in.fa", n=23)
    out = tmp_path / "out"
    explain_dataset(sequence_explainer, path, out, shard_size=5, progress=False)
    ohe, attr = export_modisco(out)
    direct_ohe, direct_attr = to_modisco(sequence_explainer.explain(path), tmp_path / "direct-")
    assert np.load(ohe).shape == (23, 4, 200)
    np.testing.assert_array_equal(np.load(ohe), np.load(direct_ohe)["arr_0"])
    np.testing.assert_allclose(np.load(attr), np.load(direct_attr)["arr_0"], rtol=1e-5, atol=1e-6)
    assert not list(out.glob("*.tmp"))


def test_export_modisco_refuses_what_modisco_cannot_read(tmp_path, sequence_explainer, gene_explainer):
    mixed = tmp_path / "mixed.fa"
    mixed.write_text(">a\n" + "ACGT" * 25 + "\n>b\n" + "ACGT" * 30 + "\n")
    explain_dataset(sequence_explainer, mixed, tmp_path / "mixed", progress=False)
    with pytest.raises(ValueError, match=r"one length; this run has lengths 100 \('a'\), 120 \('b'\)"):
        export_modisco(tmp_path / "mixed")
    path = _fasta(tmp_path / "in.fa", n=10)
    explain_dataset(sequence_explainer, path, tmp_path / "part", shard_size=5, progress=False)
    manifest = read_manifest(tmp_path / "part")
    del manifest["shards"]["1"]
    manifest["complete"] = False
    (tmp_path / "part" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"incomplete run \(1 of 2 shards\); export-modisco reads complete runs only"):
        export_modisco(tmp_path / "part")
    h5ad, _ = _h5ad(tmp_path / "in.h5ad", n=3)
    explain_dataset(gene_explainer, h5ad, tmp_path / "genes", progress=False)
    with pytest.raises(ValueError, match="holds a genes run"):
        export_modisco(tmp_path / "genes")
    result = CliRunner().invoke(app, ["run", "export-modisco", str(tmp_path / "mixed")])
    assert result.exit_code == 2 and "one length" in result.output
    assert not list((tmp_path / "mixed").glob("*.npy*"))


# -- faults: SIGKILL in the middle of a run, then resume -------------------------------------------
KILLED_RUN = """
import os, signal, sys, time
import lrp_domains.run.dataset as dataset
from lrp_domains.bio import SequenceExplainer
real_rows, real_replace = dataset.explain_shard, os.replace
mode = sys.argv[3]
def slow_rows(*args, **kwargs):
    time.sleep(0.4)  # every shard takes a while, so a kill lands inside one
    return real_rows(*args, **kwargs)
def dying_replace(src, dst):
    if str(src).endswith("shard-00002.parquet.tmp"):
        os.kill(os.getpid(), signal.SIGKILL)  # die with the shard written but not yet renamed
    return real_replace(src, dst)
if mode == "slow":
    dataset.explain_shard = slow_rows
elif mode == "die-at-rename":
    dataset.os.replace = dying_replace
dataset.explain_dataset(SequenceExplainer.default(), sys.argv[1], sys.argv[2], shard_size=6, progress=False)
"""


def _run_script(tmp_path: Path, *args: str) -> subprocess.Popen:
    script = tmp_path / "killed_run.py"
    script.write_text(textwrap.dedent(KILLED_RUN))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(script), *args], env=env, cwd=ROOT)


@pytest.mark.slow  # a subprocess or a whole dataset: make test runs it, make test-fast does not
@pytest.mark.parametrize("mode", ["slow", "die-at-rename"])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, sequence_explainer, mode):
    path = _fasta(tmp_path / "in.fa", n=40)
    reference = tmp_path / "reference"
    explain_dataset(sequence_explainer, path, reference, shard_size=6, progress=False)
    out = tmp_path / "out"
    process = _run_script(tmp_path, str(path), str(out), mode)
    if mode == "slow":
        deadline = time.time() + 120
        while not (out / "shard-00001.parquet").exists():
            assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.02)
        time.sleep(0.2)  # inside shard 2's 0.4 s
        process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=120) == -signal.SIGKILL
    killed = read_manifest(out)
    assert not killed["complete"] and 0 < len(killed["shards"]) < 7
    if mode == "die-at-rename":
        assert (out / "shard-00002.parquet.tmp").exists() and not (out / "shard-00002.parquet").exists()
    explain_dataset(sequence_explainer, path, out, shard_size=6, progress=False)
    resumed, expected = read_results(out), read_results(reference)
    assert list(resumed.row) == list(range(40))  # no row lost, none duplicated
    pd.testing.assert_frame_equal(resumed, expected)
    assert not list(out.glob("*.tmp"))


# -- Ray ------------------------------------------------------------------------------------------
@pytest.mark.cluster
def test_ray_engine_equals_local_engine(tmp_path):
    pytest.importorskip("ray.data")
    from functools import partial

    from lrp_domains.domains import build_explainer

    path = _fasta(tmp_path / "in.fa", n=26)
    factory = partial(build_explainer, "sequences")
    explain_dataset(factory, path, tmp_path / "local", shard_size=5, progress=False)
    explain_dataset(factory, path, tmp_path / "ray", shard_size=5, progress=False, engine="ray", num_workers=2)
    local, distributed = read_manifest(tmp_path / "local"), read_manifest(tmp_path / "ray")
    assert distributed["complete"] and distributed["shards"] == local["shards"]
    assert distributed["settings"] == local["settings"] and distributed["input"] == local["input"]
    for name in _shard_files(tmp_path / "local"):
        assert pq.read_schema(tmp_path / "ray" / name) == pq.read_schema(tmp_path / "local" / name)
    pd.testing.assert_frame_equal(read_results(tmp_path / "ray"), read_results(tmp_path / "local"))


@pytest.mark.cluster
def test_ray_engine_reports_bad_input_as_the_local_engine_does(tmp_path):
    pytest.importorskip("ray.data")
    from functools import partial

    from lrp_domains.domains import build_explainer

    path = write_fasta(tmp_path / "bad.fa", make_dataset(12, seed=5))
    lines = path.read_text().splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith(">")][9] + 1  # record 9's sequence line
    lines[at] = lines[at][:40] + "Z" + lines[at][41:]
    path.write_text("\n".join(lines) + "\n")
    factory = partial(build_explainer, "sequences")
    messages = []
    for engine, out in (("local", "local"), ("ray", "ray")):
        with pytest.raises(ValueError) as caught:
            explain_dataset(factory, path, tmp_path / out, shard_size=4, progress=False, engine=engine, num_workers=2)
        messages.append(str(caught.value))
        # whatever was finished before the error is complete and listed
        assert len(read_results(tmp_path / out)) == 4 * len(read_manifest(tmp_path / out)["shards"])
    assert messages[0] == messages[1]
    assert re.match(r"bad.fa, shard 2 \(rows 8 to 11, .*'Z' at position 41 is not in the alphabet ACGT", messages[0])


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_run_sequences_and_resume(tmp_path):
    path = _fasta(tmp_path / "in.fa", n=12)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", "sequences", str(path), "--out", str(out), "--shard-size", "5", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "12 rows in 3 shards" in result.output
    assert len(read_results(out)) == 12
    result = CliRunner().invoke(
        app,
        [
            "run",
            "sequences",
            str(path),
            "--out",
            str(out),
            "--shard-size",
            "5",
            "--composite",
            "epsilon",
            "--no-progress",
        ],
    )
    assert result.exit_code == 2 and "settings.composite" in result.output


def test_cli_run_genes_with_user_model(tmp_path):
    path, data = _h5ad(tmp_path / "in.h5ad", n=9)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "genes",
            str(path),
            "--out",
            str(out),
            "--model",
            "models:expression_mlp",
            "--shard-size",
            "4",
            "--target",
            "B",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_results(out)
    assert list(rows.target) == ["B"] * 9
    model, genes, classes = expression_mlp()
    expected = ExpressionExplainer(model, genes, classes).explain(data, target="B")
    np.testing.assert_allclose(
        np.stack(rows.relevance.map(np.asarray).to_list()), expected.relevance[genes].to_numpy(), rtol=1e-5, atol=1e-7
    )


def test_cli_run_genes_missing_genes_error_or_zero(tmp_path):
    path, data = _h5ad(tmp_path / "in.h5ad", n=5)
    dropped = data[:, [g for g in data.var_names if g != EXPRESSION_GENES[0]]].copy()
    dropped.write_h5ad(tmp_path / "dropped.h5ad")
    args = ["run", "genes", str(tmp_path / "dropped.h5ad"), "--model", "models:expression_mlp", "--no-progress"]
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert refused.exit_code == 2 and f"1 of the model's {len(EXPRESSION_GENES)} genes" in refused.output
    assert "--missing zero" in refused.output
    filled = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--missing", "zero"])
    assert filled.exit_code == 0, filled.output
    assert read_manifest(tmp_path / "b")["settings"]["options"] == {"missing": "zero"}
    # zero-filling equals explaining the data with that gene set to 0
    data.X[:, list(data.var_names).index(EXPRESSION_GENES[0])] = 0
    model, genes, classes = expression_mlp()
    expected = ExpressionExplainer(model, genes, classes).explain(data)
    np.testing.assert_allclose(
        np.stack(read_results(tmp_path / "b").relevance.map(np.asarray).to_list()),
        expected.relevance[genes].to_numpy(),
        rtol=1e-5,
        atol=1e-7,
    )
    wrong_kind = CliRunner().invoke(
        app,
        ["run", "sequences", str(_fasta(tmp_path / "in.fa", n=2)), "--out", str(tmp_path / "c"), "--missing", "zero"],
    )
    assert wrong_kind.exit_code == 2 and "a sequences run takes no option 'missing'" in wrong_kind.output


def test_cli_run_on_ray_without_ray_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    path = _fasta(tmp_path / "in.fa", n=2)
    result = CliRunner().invoke(app, ["run", "sequences", str(path), "--out", str(tmp_path / "out"), "--engine", "ray"])
    assert result.exit_code == 2 and 'pip install "ray[data]"' in result.output
    assert not (tmp_path / "out").exists()


def test_cli_run_text_reports_a_missing_column(tmp_path):
    pd.DataFrame({"review": TEXTS}).to_csv(tmp_path / "in.csv", index=False)
    result = CliRunner().invoke(
        app, ["run", "text", str(tmp_path / "in.csv"), "--out", str(tmp_path / "out"), "--no-progress"]
    )
    assert result.exit_code == 2 and "no column 'text'" in result.output and "--column" in result.output
