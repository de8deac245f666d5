"""Runs resume in any process: for every registered kind, the same `lrp-domains run` command run
again in a fresh process (a subprocess, not this interpreter) recomputes nothing and exits 0, and
a real change (another composite, another epsilon, other weights) is refused with a message that
names the part that differs.

Before this, text, dna-lm and gene-transformer runs were refused in a new process: their manifest
held ``repr(composite.rules)``, with a predicate's address (``<function is_rms_norm at 0x7f...>``).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import torch
from models import EXPRESSION_GENES, expression_mlp
from typer.testing import CliRunner

from lrp_domains import domains
from lrp_domains.bench.data.synthetic import make_dataset, write_fasta
from lrp_domains.cli import app
from lrp_domains.core.composites import epsilon
from lrp_domains.run import explain_dataset, read_manifest

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
TEXTS = ["a good film", "bad, boring and long", "I loved it", "not great", "charming", "dull"]


def _text(tmp_path: Path, model_dir: str) -> tuple[list[str], list[str], str]:
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    args = [str(tmp_path / "in.txt"), "--model", model_dir]
    return args, ["--composite", "cp-lrp"], "settings.composite: 'attnlrp' before, 'cp-lrp' now"


def _sequences(tmp_path: Path, model_dir: str) -> tuple[list[str], list[str], str]:
    write_fasta(tmp_path / "in.fa", make_dataset(7, seed=2))
    return [str(tmp_path / "in.fa")], ["--composite", "epsilon"], "settings.composite: 'genomics' before, 'epsilon' now"


def _genes(tmp_path: Path, model_dir: str) -> tuple[list[str], list[str], str]:
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    anndata.AnnData(
        rng.normal(size=(7, len(EXPRESSION_GENES))).astype(np.float32),
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(7)]),
        var=pd.DataFrame(index=EXPRESSION_GENES),
    ).write_h5ad(tmp_path / "in.h5ad")
    model, _, _ = expression_mlp()
    state = {name: value + 0.01 for name, value in model.state_dict().items()}  # other weights, same model
    save_file(state, tmp_path / "other.safetensors")
    return (
        [str(tmp_path / "in.h5ad"), "--model", "models:expression_mlp"],
        ["--weights", str(tmp_path / "other.safetensors")],
        "settings.model: ",
    )


def _gene_transformer(tmp_path: Path, model_dir: str) -> tuple[list[str], list[str], str]:
    from test_gene_transformer import GENES, _data, _explainer

    from lrp_domains.bio.cells.gene_transformer import TrainedGeneTransformer

    built = _explainer()
    TrainedGeneTransformer(built.model.float(), built.vocab, built.classes).save(tmp_path / "gt")
    data = _data(7)
    anndata.AnnData(
        data.to_numpy(np.float32), obs=pd.DataFrame(index=data.index), var=pd.DataFrame(index=GENES)
    ).write_h5ad(tmp_path / "in.h5ad")
    return (
        [str(tmp_path / "in.h5ad"), "--model", str(tmp_path / "gt")],
        ["--composite", "cp-lrp"],
        "settings.composite: 'attnlrp' before, 'cp-lrp' now",
    )


def _variants(tmp_path: Path, model_dir: str) -> tuple[list[str], list[str], str]:
    rng = np.random.default_rng(1)
    chrom = "".join(rng.choice(list("ACGT"), 1200))
    (tmp_path / "genome.fa").write_text(">chr1\n" + "\n".join(chrom[i : i + 60] for i in range(0, 1200, 60)) + "\n")
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    for n, pos in enumerate((300, 450, 600, 750, 900)):
        ref = chrom[pos - 1]
        lines.append(f"chr1\t{pos}\tv{n}\t{ref}\t{'A' if ref != 'A' else 'C'}\t.\t.\t.")
    (tmp_path / "calls.vcf").write_text("\n".join(lines) + "\n")
    return (
        [str(tmp_path / "calls.vcf"), "--option", f"fasta={tmp_path / 'genome.fa'}", "--option", "motifs=none"],
        ["--composite", "epsilon"],
        "settings.composite: 'genomics' before, 'epsilon' now",
    )


def _dna_lm(tmp_path: Path, model_dir: str) -> tuple[list[str], list[str], str]:
    from test_dna_language_models import _esm

    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(3)
    model = _esm(tokenizer, "rotary").float()
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    write_fasta(tmp_path / "in.fa", make_dataset(7, seed=3))
    return (
        [str(tmp_path / "in.fa"), "--model", str(tmp_path / "lm")],
        ["--composite", "cp-lrp"],
        "settings.composite: 'attnlrp' before, 'cp-lrp' now",
    )


CASES = {
    "text": _text,
    "sequences": _sequences,
    "genes": _genes,
    "gene-transformer": _gene_transformer,
    "variants": _variants,
    "dna-lm": _dna_lm,
}


def test_every_built_in_kind_has_a_case():
    assert set(domains._entry_points()) == set(CASES)


def _snapshot(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(out.iterdir())}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_the_same_command_in_a_new_process_recomputes_nothing(kind, tmp_path, model_dir, monkeypatch):
    monkeypatch.chdir(TESTS)  # where MODULE:FACTORY models (models:expression_mlp) are found
    args, change, differs = CASES[kind](tmp_path, model_dir)
    out = tmp_path / "out"
    command = ["run", kind, *args, "--out", str(out), "--shard-size", "3", "--no-progress"]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    manifest = read_manifest(out)
    assert manifest["complete"] and len(manifest["shards"]) >= 2
    json.dumps(manifest["settings"])  # plain JSON data, nothing process-bound
    assert " at 0x" not in json.dumps(manifest["settings"])
    before, manifest_bytes = _snapshot(out), (out / "manifest.json").read_bytes()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    again = subprocess.run(
        [sys.executable, "-m", "lrp_domains", *command], cwd=TESTS, env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert _snapshot(out) == before and (out / "manifest.json").read_bytes() == manifest_bytes
    refused = CliRunner().invoke(app, [*command, *change])
    assert refused.exit_code == 2, refused.output
    assert "other input or settings" in refused.output and differs in refused.output, refused.output
    assert _snapshot(out) == before


def test_another_epsilon_is_another_run_and_the_message_names_it(tmp_path):
    from lrp_domains.bio import SequenceExplainer

    path = write_fasta(tmp_path / "in.fa", make_dataset(5, seed=1))
    model = SequenceExplainer.default().model
    explain_dataset(
        SequenceExplainer(model, composite=epsilon(1e-6)), path, tmp_path / "out", shard_size=2, progress=False
    )
    with pytest.raises(ValueError) as refused:
        explain_dataset(
            SequenceExplainer(model, composite=epsilon(1e-3)), path, tmp_path / "out", shard_size=2, progress=False
        )
    assert "epsilon: 1e-06 before, 0.001 now" in str(refused.value)
    changed = SequenceExplainer(copy.deepcopy(model), composite=epsilon(1e-6))
    with torch.no_grad():
        next(changed.model.parameters()).add_(0.5)
    with pytest.raises(ValueError, match=r"settings\.model: '[0-9a-f]{10}"):
        explain_dataset(changed, path, tmp_path / "out", shard_size=2, progress=False)
