"""More bad inputs that must end in one line naming the file, option or record and what to do:
genomes in read-only folders (and .fai files never written or rewritten), model folders without a
tokenizer, gene lists that do not fit the model, unreachable Ray clusters, mistyped text model
folders, explainer options given to from_pretrained, IUPAC letters in a genome, models with the
wrong number of channels, chromosome naming mismatches, duplicate FASTA ids, factories that raise,
and targets a model does not have."""

from __future__ import annotations

import gzip
import os
import socket
import stat
import sys
import time
import warnings
from pathlib import Path

import models as M
import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import one_line_error, run

from lrp_domains.errors import InputError

pyfaidx = pytest.importorskip("pyfaidx")


def _random_dna(n: int, seed: int = 0) -> str:
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), n))


def _fasta(path: Path, records: dict[str, str], width: int = 60) -> Path:
    with open(path, "w") as handle:
        for name, sequence in records.items():
            handle.write(f">{name}\n")
            for i in range(0, len(sequence), width):
                handle.write(sequence[i : i + width] + "\n")
    return path


def _vcf(path: Path, rows: list[tuple[str, int, str, str]]) -> Path:
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    lines += [f"{chrom}\t{pos}\tv{k}\t{ref}\t{alt}\t.\tPASS\t." for k, (chrom, pos, ref, alt) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _other(base: str) -> str:
    return next(b for b in "ACGT" if b != base)


def _module(folder: Path, name: str, code: str, monkeypatch) -> str:
    """A models module written into ``folder`` (made the current folder, as a user runs the CLI)."""
    (folder / f"{name}.py").write_text(code)
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop(name, None)
    return name


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Index caches go under the test's folder, never the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


# -- 1. genomes without a .fai: never written beside them; an existing .fai is never rewritten -----
CHROM = _random_dna(1000, 11)


def _genome_and_vcf(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    fasta = _fasta(folder / "genome.fa", {"chr1": CHROM})
    vcf = _vcf(
        folder.parent / f"{folder.name}.vcf",
        [("chr1", 500, CHROM[499], _other(CHROM[499])), ("chr1", 520, CHROM[519], _other(CHROM[519]))],
    )
    return fasta, vcf


def _variant_commands(vcf: Path, fasta: Path, out: Path) -> list[list[object]]:
    return [
        ["bio", "variants", "--vcf", vcf, "--fasta", fasta, "--out", out / "bio", "--motifs", "none", "--no-report"],
        [
            "run",
            "variants",
            vcf,
            "--out",
            out / "run",
            "--option",
            f"fasta={fasta}",
            "--option",
            "motifs=none",
            "--no-progress",
        ],
    ]


#: Root without the capabilities that let it write into any folder (setpriv, util-linux).
_NO_OVERRIDE = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search,-fowner",
    "--bounding-set=-dac_override,-dac_read_search,-fowner",
]


def test_a_genome_in_a_read_only_folder_is_read_without_writing_an_index(tmp_path):
    import shutil
    import subprocess

    fasta, vcf = _genome_and_vcf(tmp_path / "genome")
    folder = fasta.parent
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if not os.access(folder, os.W_OK):
            for command in _variant_commands(vcf, fasta, tmp_path / "out"):
                result = run(*command)
                assert result.exit_code == 0, result.output
        else:  # root: chmod alone does not stop it; run the commands as root without those capabilities
            if shutil.which("setpriv") is None:
                pytest.skip("running as root, where chmod does not make a folder read-only, and without setpriv")
            code = (
                "import sys; from typer.testing import CliRunner; from lrp_domains.cli import app; "
                "import os; assert not os.access(sys.argv[1], os.W_OK), 'still writable'; "
                "results = [CliRunner().invoke(app, c) for c in eval(sys.argv[2])]; "
                "print([(r.exit_code, r.output[-300:]) for r in results]); "
                "sys.exit(max(r.exit_code for r in results))"
            )
            commands = [[str(a) for a in c] for c in _variant_commands(vcf, fasta, tmp_path / "out")]
            done = subprocess.run(
                [*_NO_OVERRIDE, sys.executable, "-c", code, str(folder), repr(commands)],
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
            if "still writable" in done.stderr or "setpriv:" in done.stderr:
                pytest.skip(f"running as root, and setpriv cannot drop the override: {done.stderr[-200:]}")
            assert done.returncode == 0, done.stdout + done.stderr
    finally:
        folder.chmod(stat.S_IRWXU)
    assert sorted(p.name for p in folder.iterdir()) == ["genome.fa"]


def test_no_fai_appears_beside_a_genome_that_had_none(tmp_path):
    fasta, vcf = _genome_and_vcf(tmp_path / "genome")
    for command in _variant_commands(vcf, fasta, tmp_path / "out"):
        result = run(*command)
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in fasta.parent.iterdir()) == ["genome.fa"]
    table = pd.read_csv(tmp_path / "out" / "bio" / "variants.tsv", sep="\t")
    assert list(table.status) == ["ok", "ok"]
    # The index is cached in our own folder, and the bigWig's chromosome sizes come from it too.
    result = run(*_variant_commands(vcf, fasta, tmp_path / "again")[0], "--bigwig")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / "bio" / "delta_relevance.bw").is_file()
    assert sorted(p.name for p in fasta.parent.iterdir()) == ["genome.fa"]
    assert list((tmp_path / "cache").rglob("*.fai"))


def test_a_bgzipped_genome_gets_no_fai_or_gzi_beside_it(tmp_path):
    from Bio import bgzf

    from lrp_domains.bio.sequences.genome import open_fasta

    folder = tmp_path / "genome"
    folder.mkdir()
    plain = _fasta(tmp_path / "plain.fa", {"chr1": CHROM})
    with bgzf.BgzfWriter(str(folder / "genome.fa.gz")) as handle:
        handle.write(plain.read_text())
    genome, opened = open_fasta(folder / "genome.fa.gz")
    try:
        assert opened and str(genome["chr1"][10:20]) == CHROM[10:20]
    finally:
        genome.close()
    assert sorted(p.name for p in folder.iterdir()) == ["genome.fa.gz"]


def test_an_existing_fai_is_read_and_never_rewritten(tmp_path):
    fasta, vcf = _genome_and_vcf(tmp_path / "genome")
    pyfaidx.Faidx(str(fasta)).close()  # the user's own index
    fai = Path(f"{fasta}.fai")
    old = time.time() - 3600
    os.utime(fai, (old, old))  # older than the genome: pyfaidx would rebuild it by default
    before = fai.read_bytes(), fai.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyfaidx says the index is older than the genome
        for command in _variant_commands(vcf, fasta, tmp_path / "out"):
            result = run(*command)
            assert result.exit_code == 0, result.output
    assert (fai.read_bytes(), fai.stat().st_mtime_ns) == before
    assert not list((tmp_path / "cache").rglob("*.fai"))  # the user's index was used


# -- 2. a DNA language model folder without its tokenizer ----------------------------------------
def test_a_dna_model_folder_without_a_tokenizer_is_named(tmp_path):
    pytest.importorskip("transformers")
    import transformers as tf

    from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer
    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(3)
    config = tf.EsmConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=40,
        pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id,
        num_labels=2,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        position_embedding_type="rotary",
    )
    tf.EsmForSequenceClassification(config).save_pretrained(tmp_path / "model")  # no tokenizer saved
    _fasta(tmp_path / "in.fa", {"a": _random_dna(20), "b": _random_dna(20, 1)})
    one_line_error(
        run(
            "run", "dna-lm", tmp_path / "in.fa", "--out", tmp_path / "o", "--model", tmp_path / "model", "--no-progress"
        ),
        "no tokenizer",
        "save_pretrained",
    )
    with pytest.raises(InputError, match="no tokenizer"):
        TokenSequenceExplainer.from_pretrained(tmp_path / "model")


# -- 3. a gene list that does not fit the model's input ------------------------------------------
def test_a_genes_model_whose_width_differs_from_its_genes_is_named(tmp_path, monkeypatch):
    name = _module(
        tmp_path,
        "narrow_gene_models",
        "import models\n\ndef build():\n"
        "    model, genes, classes = models.expression_mlp()\n    return model, genes[:10], classes\n",
        monkeypatch,
    )
    frame = pd.DataFrame(
        np.random.default_rng(0).normal(size=(6, 12)), columns=M.EXPRESSION_GENES, index=[f"s{i}" for i in range(6)]
    )
    frame.to_csv(tmp_path / "expression.csv")
    for command in (
        ["bio", "genes", tmp_path / "expression.csv", "--out", tmp_path / "o1"],
        ["run", "genes", tmp_path / "expression.csv", "--out", tmp_path / "o2"],
    ):
        one_line_error(run(*command, "--model", f"{name}:build", "--no-progress"), "takes 12 inputs", "10 genes")


# -- 4. a Ray address nobody listens on ----------------------------------------------------------
def test_a_ray_address_nobody_listens_on_fails_quickly(tmp_path):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray cluster is already joined in this process")
    with socket.socket() as probe:  # a free port: bound, then released, nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    frame = pd.DataFrame(
        np.random.default_rng(0).normal(size=(3, 12)), columns=M.EXPRESSION_GENES, index=[f"s{i}" for i in range(3)]
    )
    frame.to_csv(tmp_path / "expression.csv")
    start = time.monotonic()
    result = run(
        "run",
        "genes",
        tmp_path / "expression.csv",
        "--out",
        tmp_path / "o",
        "--model",
        "models:expression_mlp",
        "--engine",
        "ray",
        "--address",
        f"127.0.0.1:{port}",
        "--no-progress",
    )
    assert time.monotonic() - start < 30
    one_line_error(result, f"127.0.0.1:{port}")
    assert not ray.is_initialized()


# -- 5 and 6. text model folders ------------------------------------------------------------------
def test_a_mistyped_text_model_folder_is_named_without_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once, when huggingface_hub was imported
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("good\n")
    for model in ("./no-such-folder", str(tmp_path / "missing")):
        one_line_error(run("text", "explain", "good", "--model", model), "no such folder", "network")
        one_line_error(
            run("run", "text", tmp_path / "in.txt", "--out", tmp_path / "o", "--model", model, "--no-progress"),
            "no such folder",
            "network",
        )
    # A name that could be a hub name: offline, the one line says so.
    one_line_error(run("text", "explain", "good", "--model", "no-such-model-name"), "no-such-model-name", "network")


def test_explainer_options_of_from_pretrained_reach_the_explainer(model_dir):
    from lrp_domains.text import TextExplainer

    explainer = TextExplainer.from_pretrained(model_dir, strict=True, labels=["neg", "pos"], max_length=9)
    assert explainer.strict is True and explainer.labels == ["neg", "pos"] and explainer.max_length == 9
    assert TextExplainer.from_pretrained(model_dir).strict is False


# -- 7. an IUPAC letter in the genome near a variant ----------------------------------------------
def test_an_iupac_letter_near_one_variant_leaves_the_others_explained(tmp_path):
    from lrp_domains.bio import SequenceExplainer
    from lrp_domains.bio.variants.effects import explain_variants

    chrom = list(_random_dna(1200, 5))
    chrom[450] = "R"  # inside the window of the variant at 500, far from the one at 900
    chrom = "".join(chrom)
    fasta = _fasta(tmp_path / "genome.fa", {"chr1": chrom})
    vcf = _vcf(
        tmp_path / "calls.vcf",
        [("chr1", 500, chrom[499], _other(chrom[499])), ("chr1", 900, chrom[899], _other(chrom[899]))],
    )
    with pytest.warns(UserWarning, match="chr1:451"):
        table = explain_variants(SequenceExplainer.default(), vcf, fasta, motifs=None, sort=False)
    assert list(table.status) == ["ambiguous_base", "ok"]
    assert np.isfinite(table.delta_score[1]) and np.isnan(table.delta_score[0])
    result = run(
        "bio", "variants", "--vcf", vcf, "--fasta", fasta, "--out", tmp_path / "o", "--motifs", "none", "--no-report"
    )
    assert result.exit_code == 0, result.output
    assert "chr1:451" in result.output
    result = run(
        "run",
        "variants",
        vcf,
        "--out",
        tmp_path / "r",
        "--option",
        f"fasta={fasta}",
        "--option",
        "motifs=none",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    from lrp_domains.run import read_results

    assert list(read_results(tmp_path / "r").status) == ["ambiguous_base", "ok"]


# -- 8. a sequence model with the wrong number of channels ----------------------------------------
def test_a_model_with_five_input_channels_is_told_about_channels(tmp_path, monkeypatch):
    name = _module(
        tmp_path,
        "five_channel_models",
        "import models\n\ndef build():\n    return models.cnn1d(channels=5)\n",
        monkeypatch,
    )
    _fasta(tmp_path / "in.fa", {"a": _random_dna(40), "b": _random_dna(40, 1)})
    result = run(
        "bio",
        "sequences",
        tmp_path / "in.fa",
        "--out",
        tmp_path / "o",
        "--model",
        f"{name}:build",
        "--motifs",
        "none",
        "--no-progress",
    )
    one_line_error(result, "5 input channels", "4", "ACGT")
    assert "longer sequences" not in result.output
    from lrp_domains.bio import SequenceExplainer

    with pytest.raises(InputError, match="5 input channels"):
        SequenceExplainer(M.cnn1d(channels=5).eval()).explain([_random_dna(40)])


# -- 9. chromosome names that differ between the VCF and the genome --------------------------------
def test_a_chr_prefix_mismatch_is_named_once(tmp_path):
    from lrp_domains.bio import SequenceExplainer
    from lrp_domains.bio.variants.effects import explain_variants

    fasta = _fasta(tmp_path / "genome.fa", {"chr1": _random_dna(600, 1), "chr2": _random_dna(600, 2)})
    vcf = _vcf(tmp_path / "calls.vcf", [("1", 300, "A", "C"), ("2", 300, "A", "G"), ("1", 320, "A", "T")])
    with pytest.warns(UserWarning, match="rename") as caught:
        table = explain_variants(SequenceExplainer.default(), vcf, fasta, motifs=None)
    assert set(table.status) == {"unknown_chrom"}
    assert len([w for w in caught if "rename" in str(w.message)]) == 1
    assert "chr1" in str(caught[0].message) and "1, 2" in str(caught[0].message)
    result = run(
        "bio",
        "variants",
        "--vcf",
        vcf,
        "--fasta",
        fasta,
        "--out",
        tmp_path / "o",
        "--motifs",
        "none",
        "--no-report",
        "--bigwig",
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("rename one of them") == 1 and "chr1" in result.output
    assert "delta_relevance.bw" in result.output and "no variant" in result.output
    assert not (tmp_path / "o" / "delta_relevance.bw").exists()


# -- 10. duplicate FASTA ids ----------------------------------------------------------------------
def test_a_duplicate_fasta_id_names_the_file_and_both_records(tmp_path):
    from lrp_domains.bio import SequenceExplainer

    path = _fasta(tmp_path / "dup.fa", {"a": _random_dna(200), "b": _random_dna(200, 1)})
    with path.open("a") as handle:
        handle.write(f">a\n{_random_dna(200, 2)}\n")
    one_line_error(
        run("bio", "sequences", path, "--out", tmp_path / "o", "--motifs", "none", "--no-progress"),
        "dup.fa",
        "'a'",
        "records 1 and 3",
    )
    with pytest.raises(InputError, match=r"dup\.fa: .*'a' \(records 1 and 3\)"):
        SequenceExplainer.default().explain(path)
    with pytest.raises(InputError, match=r"dup\.fa: .*'a' \(records 1 and 3\)"):
        SequenceExplainer.default().explain(str(path))


# -- 11. a factory that raises ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "error, shown", [("RuntimeError('boom')", "RuntimeError: boom"), ("ValueError('bad size')", "ValueError: bad size")]
)
def test_a_factory_that_raises_is_named(tmp_path, monkeypatch, error, shown):
    name = _module(tmp_path, f"raising_models_{error[0]}", f"def build():\n    raise {error}\n", monkeypatch)
    frame = pd.DataFrame(np.ones((3, 12)), columns=M.EXPRESSION_GENES, index=["a", "b", "c"])
    frame.to_csv(tmp_path / "expression.csv")
    one_line_error(
        run(
            "bio",
            "genes",
            tmp_path / "expression.csv",
            "--out",
            tmp_path / "o",
            "--model",
            f"{name}:build",
            "--no-progress",
        ),
        f"--model {name}:build: the factory raised {shown}",
    )
    from lrp_domains.models import load_user_model

    with pytest.raises(InputError) as caught:
        load_user_model(f"{name}:build")
    assert type(caught.value.__cause__).__name__ == error.split("(")[0]


# -- 12. a target the model does not have --------------------------------------------------------------
@pytest.mark.parametrize("target", ["profile", "counts"])
def test_a_profile_or_counts_target_on_a_model_without_those_heads_is_refused(tmp_path, target):
    _fasta(tmp_path / "in.fa", {"a": _random_dna(200), "b": _random_dna(200, 1)})
    for command in (
        ["bio", "sequences", tmp_path / "in.fa", "--out", tmp_path / "o1", "--motifs", "none"],
        ["run", "sequences", tmp_path / "in.fa", "--out", tmp_path / "o2"],
    ):
        one_line_error(
            run(*command, "--target", target, "--no-progress"), f"target {target!r}", "one tensor", "output index"
        )


def test_profile_and_counts_targets_still_read_a_profile_model():
    from lrp_domains.bio import SequenceExplainer, counts_target, profile_target

    class TwoHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(4, 2, 3, padding=1)
            self.counts = torch.nn.Linear(2, 1)

        def forward(self, x):
            profile = self.conv(x)
            return profile, self.counts(profile.mean(-1))

    x = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 30)), 4).transpose(1, 2).float()
    explainer = SequenceExplainer(TwoHeads().eval())
    for target in (profile_target(), counts_target(), "profile", "counts"):
        assert explainer.explain(x, target=target).explained.shape == (2,)
    profile_only = torch.nn.Conv1d(4, 2, 3, padding=1).eval()  # (N, strands, L): a profile, no counts
    assert SequenceExplainer(profile_only).explain(x, target="profile").explained.shape == (2,)
    with pytest.raises(InputError, match="counts"):
        SequenceExplainer(profile_only).explain(x, target="counts")


# -- the default: gzip genome (not bgzip) is still refused in one line --------------------------------
def test_a_plain_gzip_genome_is_refused_in_one_line(tmp_path):
    fasta, vcf = _genome_and_vcf(tmp_path / "genome")
    gz = tmp_path / "genome.fa.gz"
    gz.write_bytes(gzip.compress(fasta.read_bytes()))
    one_line_error(
        run("bio", "variants", "--vcf", vcf, "--fasta", gz, "--out", tmp_path / "o", "--motifs", "none", "--no-report"),
        "genome.fa.gz",
        "bgzip",
    )
    assert not Path(f"{gz}.fai").exists()
