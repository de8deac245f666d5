"""Models as the field saves them, given to ``--model`` and loaded without running pickled code:
bpnet-lite's ``torch.save`` files (an allowlist of classes, ``weights_only=True``), safetensors
weights of models with aliased submodules (Enformer, ``safetensors.torch.save_model``), a
transformers folder with a slow k-mer tokenizer (Nucleotide Transformer's ``EsmTokenizer``), text
classifiers whose positions start after the padding index (RoBERTa, XLM-R, MPNet, ESM), and the
factory contract in ``--help``. Each through the command line, compared with the Python API."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_genomics_architectures import BPNET_LENGTH, onehot, tiny_bpnet, tiny_chrombpnet, tiny_enformer
from torch import nn
from typer.testing import CliRunner

from lrp_domains.bio import SequenceExplainer, counts_target, profile_target
from lrp_domains.cli import app
from lrp_domains.errors import InputError
from lrp_domains.run import read_results


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _ok(result) -> None:
    assert result.exit_code == 0, result.output


def _one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "error: " in result.output, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("error: "))
    for fragment in fragments:
        assert fragment in line, (fragment, result.output)
    return line


def _letters(x: torch.Tensor) -> list[str]:
    return ["".join(np.array(list("ACGT"))[row]) for row in x.argmax(1).numpy()]


def _fasta(path: Path, sequences: list[str]) -> Path:
    path.write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(sequences)))
    return path


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0)


# -- 1. bpnet-lite models saved with torch.save ------------------------------------------------------
def test_load_saved_module_returns_bpnet_and_chrombpnet_as_saved(tmp_path):
    from bpnetlite.bpnet import BPNet
    from bpnetlite.chrombpnet import ChromBPNet

    from lrp_domains.models import load_saved_module

    for name, model in [("bpnet.torch", tiny_bpnet()), ("chrombpnet.pt", tiny_chrombpnet())]:
        torch.save(model, tmp_path / name)
        loaded = load_saved_module(tmp_path / name)
        assert type(loaded) in (BPNet, ChromBPNet) and type(loaded) is type(model)
        _same_state(loaded, model)
        assert loaded.training == model.training  # unchanged: no eval(), no dtype or device change
        x = onehot(2, BPNET_LENGTH, 1)
        controls = [torch.zeros(2, model.n_control_tracks, BPNET_LENGTH)] if model.n_control_tracks else []
        with torch.no_grad():
            for got, expected in zip(loaded(x, *controls), model(x, *controls)):
                torch.testing.assert_close(got, expected)


def test_a_bpnet_trained_and_saved_by_bpnet_lite_loads(tmp_path, monkeypatch):
    """``BPNet.fit`` saves the model itself (``torch.save(self, name + ".torch")``), its training log
    holding numpy scalars: the file bpnet-lite writes, not only a fresh model's."""
    from bpnetlite.bpnet import BPNet

    from lrp_domains.models import load_saved_module

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = BPNet(n_filters=4, n_layers=1, n_outputs=1, n_control_tracks=0, verbose=False, name="tiny")
    length, out = 130, 130 - 2 * model.trimming
    x = nn.functional.one_hot(torch.randint(0, 4, (8, length)), 4).permute(0, 2, 1).float()
    y = torch.randint(0, 5, (8, 1, out)).float()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y, torch.ones(8)), batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(
            data,
            torch.optim.Adam(model.parameters()),
            X_valid=x,
            y_valid=y,
            max_epochs=1,
            device="cpu",
            dtype="float32",
        )
    loaded = load_saved_module(tmp_path / "tiny.final.torch")
    _same_state(loaded, model)
    assert loaded.logger.data["Epoch"] == [0]


def test_sequences_and_run_take_a_saved_bpnet(tmp_path):
    model = tiny_bpnet()
    torch.save(model, tmp_path / "bpnet.torch")
    x = onehot(3, BPNET_LENGTH, 6)
    fasta = _fasta(tmp_path / "in.fa", _letters(x))
    explainer = SequenceExplainer(tiny_bpnet())
    # bio sequences --target profile
    _ok(
        run(
            "bio",
            "sequences",
            fasta,
            "--out",
            tmp_path / "report",
            "--model",
            tmp_path / "bpnet.torch",
            "--target",
            "profile",
            "--motifs",
            "none",
            "--no-progress",
        )
    )
    table = pd.read_parquet(tmp_path / "report" / "relevance.parquet")
    expected = explainer.explain(x, target=profile_target())
    np.testing.assert_allclose(
        table.groupby("id", sort=True)["relevance"].sum().to_numpy(),
        expected.per_position.sum(1).numpy(),
        rtol=1e-4,
        atol=1e-6,
    )
    # run sequences --target counts
    _ok(
        run(
            "run",
            "sequences",
            fasta,
            "--out",
            tmp_path / "run",
            "--model",
            tmp_path / "bpnet.torch",
            "--target",
            "counts",
            "--no-progress",
        )
    )
    rows = read_results(tmp_path / "run")
    expected = explainer.explain(x, target=counts_target())
    np.testing.assert_allclose(
        np.stack(rows["relevance"].to_list()), expected.per_position.numpy(), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(rows["explained"], expected.explained.numpy(), rtol=1e-5)
    # the SequenceExplainer's own loader: the model unchanged
    loaded = SequenceExplainer.from_options(str(tmp_path / "bpnet.torch"))
    _same_state(loaded.model, model)
    assert loaded.architecture.name == "BPNet" and loaded.architecture.controls == 2


def test_run_and_bio_variants_take_a_saved_chrombpnet(tmp_path):
    pytest.importorskip("pyfaidx")
    from lrp_domains.bio.variants.effects import explain_variants

    model = tiny_chrombpnet()
    torch.save(model, tmp_path / "chrombpnet.pt")
    rng = np.random.default_rng(3)
    genome = "".join(rng.choice(list("ACGT"), 600))
    fasta = tmp_path / "genome.fa"
    fasta.write_text(">chr1\n" + "\n".join(genome[i : i + 60] for i in range(0, 600, 60)) + "\n")
    other = {b: next(c for c in "ACGT" if c != b) for b in "ACGT"}
    vcf = tmp_path / "calls.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        + "".join(f"chr1\t{p}\tv{p}\t{genome[p - 1]}\t{other[genome[p - 1]]}\t.\tPASS\t.\n" for p in (280, 300, 333))
    )
    expected = explain_variants(
        SequenceExplainer(tiny_chrombpnet()), vcf, fasta, window=BPNET_LENGTH, target=None, motifs=None, sort=False
    )
    _ok(
        run(
            "run",
            "variants",
            vcf,
            "--out",
            tmp_path / "run",
            "--model",
            tmp_path / "chrombpnet.pt",
            "--option",
            f"fasta={fasta}",
            "--option",
            f"window={BPNET_LENGTH}",
            "--option",
            "motifs=none",
            "--no-progress",
        )
    )
    rows = read_results(tmp_path / "run")
    assert (rows["status"] == "ok").all()
    np.testing.assert_allclose(rows["delta_score"], expected["delta_score"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rows["delta_relevance"], expected["delta_relevance"], rtol=1e-4, atol=1e-6)
    _ok(
        run(
            "bio",
            "variants",
            "--vcf",
            vcf,
            "--fasta",
            fasta,
            "--out",
            tmp_path / "bio",
            "--model",
            tmp_path / "chrombpnet.pt",
            "--window",
            BPNET_LENGTH,
            "--motifs",
            "none",
            "--no-report",
        )
    )
    table = pd.read_csv(tmp_path / "bio" / "variants.tsv", sep="\t").set_index("id").loc[expected["id"]]
    np.testing.assert_allclose(table["delta_score"], expected["delta_score"], rtol=1e-4, atol=1e-5)


class _Marker:
    """Unpickling it would run code: ``__reduce__`` makes unpickling call :func:`_touch`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (_touch, (self.path,))


def _touch(path: str) -> None:
    Path(path).write_text("code ran")


def test_a_file_holding_any_other_class_is_refused_in_one_line_and_never_unpickled(tmp_path):
    from lrp_domains.models import load_saved_module

    marker = tmp_path / "ran"
    model = tiny_bpnet()
    model.extra = _Marker(str(marker))  # a BPNet carrying something that runs code when unpickled
    torch.save(model, tmp_path / "evil.torch")
    with pytest.raises(InputError, match="test_saved_models._touch") as caught:
        load_saved_module(tmp_path / "evil.torch")
    assert "\n" not in str(caught.value) and not marker.exists()
    torch.save(nn.Sequential(nn.Conv1d(4, 2, 3), nn.Flatten()), tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"torch\.nn\.modules\.container\.Sequential"):
        load_saved_module(tmp_path / "other.pt")
    line = _one_line_error(
        run(
            "run",
            "sequences",
            _fasta(tmp_path / "in.fa", ["ACGT" * 40]),
            "--out",
            tmp_path / "out",
            "--model",
            tmp_path / "evil.torch",
            "--no-progress",
        ),
        "test_saved_models._touch",
    )
    assert "evil.torch" in line and not marker.exists() and not (tmp_path / "out").exists()
    torch.save(tiny_bpnet().state_dict(), tmp_path / "state.pt")  # a state dict, not a model
    with pytest.raises(InputError, match="state dict"):
        load_saved_module(tmp_path / "state.pt")
    (tmp_path / "broken.torch").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="broken.torch"):
        load_saved_module(tmp_path / "broken.torch")
    with pytest.raises(InputError, match="no such file"):
        load_saved_module(tmp_path / "absent.torch")


def test_weights_with_a_saved_module_are_refused(tmp_path):
    torch.save(tiny_bpnet(), tmp_path / "bpnet.torch")
    fasta = _fasta(tmp_path / "in.fa", _letters(onehot(1, BPNET_LENGTH, 2)))
    for command in (
        ["run", "sequences", fasta, "--out", tmp_path / "a"],
        ["bio", "sequences", fasta, "--out", tmp_path / "b", "--motifs", "none"],
    ):
        _one_line_error(
            run(
                *command, "--model", tmp_path / "bpnet.torch", "--weights", tmp_path / "w.safetensors", "--no-progress"
            ),
            "--weights",
            "holds its weights",
        )
    with pytest.raises(InputError, match="holds its weights"):
        SequenceExplainer.from_options(str(tmp_path / "bpnet.torch"), str(tmp_path / "w.safetensors"))
    from lrp_domains.models import load_user_model

    with pytest.raises(InputError, match="taken by the sequence commands"):  # e.g. bio genes --model bpnet.torch
        load_user_model(str(tmp_path / "bpnet.torch"))


# -- 2. safetensors weights of models with aliased parameters (Enformer) ------------------------------
ENFORMER_FACTORY = """
import torch
from enformer_pytorch import Enformer


def build(depth=1):
    torch.manual_seed(123)  # other weights than the saved ones: the file must replace every one
    return Enformer.from_hparams(dim=24, depth=depth, heads=2, attn_dim_key=4, num_downsamples=3,
                                 dim_divisible_by=4, target_length=4, output_heads=dict(human=5, mouse=3))


def deeper():
    return build(depth=2)
"""


def test_enformer_weights_written_by_save_model_load_through_the_cli(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_model

    model = tiny_enformer()
    save_model(model, str(tmp_path / "enformer.safetensors"))
    assert len(load_file(str(tmp_path / "enformer.safetensors"))) < len(model.state_dict())  # aliases dropped
    (tmp_path / "saved_enformer_factory.py").write_text(ENFORMER_FACTORY)
    monkeypatch.chdir(tmp_path)
    x = onehot(3, 64, 9)
    fasta = _fasta(tmp_path / "in.fa", _letters(x))
    target = "track=2:1-3 head=human"
    _ok(
        run(
            "run",
            "sequences",
            fasta,
            "--out",
            tmp_path / "run",
            "--model",
            "saved_enformer_factory:build",
            "--weights",
            "enformer.safetensors",
            "--target",
            target,
            "--no-progress",
        )
    )
    rows = read_results(tmp_path / "run")
    expected = SequenceExplainer(model).explain(x, target=target)
    with torch.no_grad():
        outputs = model(x.transpose(1, 2))["human"][:, 1:3, 2].sum(1)
    np.testing.assert_allclose(rows["explained"], outputs.double().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rows["explained"], expected.explained.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.stack(rows["relevance"].to_list()), expected.per_position.numpy(), rtol=1e-4, atol=1e-6
    )
    from lrp_domains.models import load_user_model

    loaded = load_user_model("saved_enformer_factory:build", tmp_path / "enformer.safetensors").model
    _same_state(loaded, model)


def test_every_truly_missing_key_is_named_and_no_aliased_one(tmp_path, monkeypatch):
    from safetensors.torch import save_model

    from lrp_domains.models import load_user_model

    save_model(tiny_enformer(), str(tmp_path / "enformer.safetensors"))
    (tmp_path / "saved_enformer_factory2.py").write_text(ENFORMER_FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import saved_enformer_factory2

    deeper = saved_enformer_factory2.deeper()
    shallow = tiny_enformer()
    missing = sorted(set(deeper.state_dict()) - set(shallow.state_dict()))
    missing = [k for k in missing if not k.startswith("_trunk.")]  # aliases of the transformer's keys
    assert len(missing) > 10
    with pytest.raises(InputError) as caught:
        load_user_model("saved_enformer_factory2:deeper", tmp_path / "enformer.safetensors")
    message = str(caught.value)
    assert "\n" not in message
    for key in missing:
        assert key in message
    assert "_trunk." not in message and "stem.0.weight" not in message


# -- 3. a transformers folder with a slow k-mer tokenizer (Nucleotide Transformer) ---------------------
def _nt_vocab(k: int) -> list[str]:
    """Nucleotide Transformer's vocabulary layout: specials, the k-mers, the single bases (ATCGN)."""
    return (
        ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>"]
        + ["".join(p) for p in itertools.product("ACGT", repeat=k)]
        + list("ATCGN")
    )


def _slow_tokenizer(folder: Path, k: int = 3, **kwargs):
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(_nt_vocab(k)))
    return tf.EsmTokenizer(str(folder / "vocab.txt"), **kwargs)


TEST_DNA = ["ACGTACGTA", "NACGTNNAC", "ACGTT", "A", "ACGTACGTANACGGT", "TTTTTTTTTTN", "GATTACAGATTACA"]


@pytest.mark.parametrize("eos", [True, False])
def test_a_slow_kmer_tokenizer_converts_to_a_fast_one_with_the_same_ids(tmp_path, eos):
    from lrp_domains.bio.dna_lm.tokenizers import fast_kmer_tokenizer

    slow = _slow_tokenizer(tmp_path / "t", **({} if eos else {"eos_token": None}))
    assert not slow.is_fast
    fast = fast_kmer_tokenizer(slow)
    assert fast.is_fast and fast.get_vocab() == slow.get_vocab()
    for sequence in TEST_DNA + ["".join(np.random.default_rng(1).choice(list("ACGTN"), 50))]:
        encoded = fast(sequence, return_offsets_mapping=True)
        assert encoded["input_ids"] == slow(sequence)["input_ids"]
        tokens = fast.convert_ids_to_tokens(encoded["input_ids"])
        for token, (start, end) in zip(tokens, encoded["offset_mapping"]):
            assert token in fast.all_special_tokens or sequence[start:end] == token
    with pytest.raises(InputError, match="k-mer"):
        (tmp_path / "u").mkdir()
        (tmp_path / "u" / "vocab.txt").write_text("\n".join(["<unk>", "<pad>", "<cls>", "ACG", "AC", "A", "C"]))
        import transformers as tf

        fast_kmer_tokenizer(tf.EsmTokenizer(str(tmp_path / "u" / "vocab.txt")))


def test_a_folder_with_a_slow_esm_tokenizer_runs_as_dna_lm(tmp_path):
    import transformers as tf

    folder = tmp_path / "nt"
    slow = _slow_tokenizer(tmp_path / "vocab", k=3)
    torch.manual_seed(0)
    config = tf.EsmConfig(
        vocab_size=len(slow),
        max_position_embeddings=64,
        position_embedding_type="rotary",
        pad_token_id=slow.pad_token_id,
        mask_token_id=slow.mask_token_id,
        num_labels=2,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        initializer_range=0.2,
    )
    model = tf.EsmForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    slow.save_pretrained(folder)
    assert not (folder / "tokenizer.json").exists()
    sequences = TEST_DNA[:5]
    fasta = _fasta(tmp_path / "in.fa", sequences)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _ok(run("run", "dna-lm", fasta, "--model", folder, "--out", tmp_path / "D", "--no-progress"))
    converted = [w for w in caught if "fast tokenizer" in str(w.message)]
    assert len(converted) == 1, [str(w.message) for w in caught]
    from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer
    from lrp_domains.bio.dna_lm.tokenizers import fast_kmer_tokenizer

    rows = read_results(tmp_path / "D")
    expected = TokenSequenceExplainer(model, fast_kmer_tokenizer(slow)).explain(sequences)
    np.testing.assert_allclose(rows["explained"], expected.explained.numpy(), rtol=1e-5, atol=1e-7)
    for i, sequence in enumerate(sequences):
        np.testing.assert_allclose(
            rows["relevance"][i], expected.per_position[i, : len(sequence)].numpy(), rtol=1e-4, atol=1e-7
        )
    assert rows["tokens"][0].tolist() == ["<cls>", "ACG", "TAC", "GTA", "<eos>"]
    # the Python API converts as the command line does
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = TokenSequenceExplainer.from_pretrained(folder)
    assert again.tokenizer.is_fast and sum("fast tokenizer" in str(w.message) for w in caught) == 1


# -- 4. positions after the padding index (RoBERTa, XLM-R, MPNet, ESM) --------------------------------
def _classifier(arch: str, positions: int = 34):
    import text_models as T
    import transformers as tf

    tokenizer = T.wordpiece_tokenizer()
    assert tokenizer.model_max_length > positions
    common = dict(
        vocab_size=tokenizer.vocab_size,
        num_labels=2,
        pad_token_id=1,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=positions,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    if arch == "roberta":
        model = tf.RobertaForSequenceClassification(tf.RobertaConfig(**common))
    elif arch == "xlm-roberta":
        model = tf.XLMRobertaForSequenceClassification(tf.XLMRobertaConfig(**common))
    else:
        model = tf.MPNetForSequenceClassification(tf.MPNetConfig(**common))
    model.config.id2label = {0: "negative", 1: "positive"}
    model.config.label2id = {"negative": 0, "positive": 1}
    return model.eval(), tokenizer


LONG_TEXT = " ".join(["a great and moving film"] * 12)


@pytest.mark.parametrize("arch", ["roberta", "xlm-roberta", "mpnet"])
def test_long_text_is_truncated_to_the_positions_after_the_padding_index(arch, tmp_path):
    import json

    from lrp_domains.text import TextExplainer

    model, tokenizer = _classifier(arch)
    folder = tmp_path / arch
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    usable = 34 - 1 - 1  # positions start at padding_idx + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run("text", "explain", LONG_TEXT, "--model", folder, "--format", "json", "--out", tmp_path / "r.json")
    _ok(result)
    assert any("truncated" in str(w.message) for w in caught)
    explainer = TextExplainer(model, tokenizer)
    assert explainer.max_length == usable
    with pytest.warns(UserWarning, match="truncated"):
        expected = explainer.explain(LONG_TEXT)
    assert expected.truncated > 0 and len(expected.tokens) == usable
    written = json.loads((tmp_path / "r.json").read_text())
    assert len(written["tokens"]) == usable
    np.testing.assert_allclose(
        [t["relevance"] for t in written["tokens"]], expected.token_relevance.numpy(), rtol=1e-4, atol=1e-7
    )
    assert written["explained"] == pytest.approx(expected.explained, rel=1e-5)
    source = tmp_path / "texts.tsv"
    pd.DataFrame({"text": [LONG_TEXT, "a dull film"]}).to_csv(source, sep="\t", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _ok(run("run", "text", source, "--model", folder, "--out", tmp_path / "run", "--no-progress"))
    rows = read_results(tmp_path / "run")
    assert rows["truncated"].tolist() == [expected.truncated, 0]
    np.testing.assert_allclose(rows["token_relevance"][0], expected.token_relevance.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(rows["explained"][0], expected.explained, rtol=1e-5)


def test_esm_with_learned_positions_names_the_usable_length(tmp_path):
    import transformers as tf

    from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer
    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(3)
    torch.manual_seed(0)
    config = tf.EsmConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=20,
        position_embedding_type="absolute",
        pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id,
        num_labels=2,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    explainer = TokenSequenceExplainer(tf.EsmForSequenceClassification(config).eval(), tokenizer)
    explainer.explain(["ACG" * 17])  # 18 tokens with <cls>: the last usable position
    with pytest.raises(InputError, match="at most 18"):
        explainer.explain(["ACG" * 18])


# -- 5. the factory contract in --help -----------------------------------------------------------------
def _help(*command: str) -> str:
    return " ".join(run(*command, "--help").output.replace("│", " ").split())


def test_help_says_what_a_factory_returns_and_which_files_model_takes():
    for command in (("bio", "sequences"), ("bio", "variants"), ("bio", "concepts")):
        shown = _help(*command)
        assert "torch.nn.Module" in shown and ".torch" in shown and "bpnet-lite" in shown, (command, shown)
    shown = _help("bio", "genes")
    assert "(module, genes, classes)" in shown and "JSON" in shown, shown
