"""DNA language models (k-mer ESM / Nucleotide Transformer, BPE BERT / DNABERT-2) explained base by
base through the text machinery: tokenizers, coverage, unchanged models, the token-to-base mapping,
first-order hypothetical contributions, conservation, seqlets and motif matches, errors."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
from models import assert_unchanged, snapshot
from torch import nn

import lrp_domains as L
import lrp_domains.text  # noqa: F401  (registers attnlrp, cp-lrp)
from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer
from lrp_domains.bio.dna_lm.tokenizers import bpe_tokenizer, kmer_tokenizer
from lrp_domains.errors import InputError

pytest.importorskip("transformers")

SMALL = dict(
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def _random_dna(n: int, length: int, seed: int, n_rate: float = 0.0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        letters = rng.choice(list("ACGT"), size=length)
        if n_rate:
            letters[rng.random(length) < n_rate] = "N"
        out.append("".join(letters))
    return out


def _esm(tokenizer, position: str, seed: int = 0):
    import transformers as tf

    torch.manual_seed(seed)
    config = tf.EsmConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=80,
        position_embedding_type=position,
        pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id,
        token_dropout=position == "absolute",
        emb_layer_norm_before=position == "absolute",
        num_labels=2,
        initializer_range=0.2,
        **SMALL,
    )
    return tf.EsmForSequenceClassification(config).double().eval()


def _bert(tokenizer, seed: int = 0):
    import transformers as tf

    torch.manual_seed(seed)
    config = tf.BertConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=80,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
        initializer_range=0.2,
        **SMALL,
    )
    return tf.BertForSequenceClassification(config).double().eval()


@pytest.fixture(scope="module")
def kmer3():
    return kmer_tokenizer(3)


@pytest.fixture(scope="module")
def bpe():
    return bpe_tokenizer(_random_dna(60, 120, seed=5), vocab_size=60)


def _case(name, kmer3, bpe):
    if name == "esm-rotary":
        return _esm(kmer3, "rotary"), kmer3
    if name == "esm-absolute":
        return _esm(kmer3, "absolute"), kmer3
    return _bert(bpe), bpe


CASES = ["esm-rotary", "esm-absolute", "bert-bpe"]
SEQUENCES = _random_dna(3, 31, seed=1, n_rate=0.05) + ["ACGTTGCAN"]


# -- tokenizers -------------------------------------------------------------------------------
def _nt_split(sequence: str, k: int) -> list[tuple[int, int]]:
    """Nucleotide Transformer's rule, written independently: k-mers of ACGT left to right, a base
    that does not start a full k-mer (or is not ACGT) alone."""
    spans, p = [], 0
    while p < len(sequence):
        if all(c in "ACGT" for c in sequence[p : p + k]) and p + k <= len(sequence):
            spans.append((p, p + k))
            p += k
        else:
            spans.append((p, p + 1))
            p += 1
    return spans


@pytest.mark.parametrize("k", [3, 6])
def test_kmer_tokenizer_splits_like_nucleotide_transformer(k):
    tokenizer = kmer_tokenizer(k)
    assert len(tokenizer) == 4 + 4**k + 5
    assert set("".join(p) for p in itertools.product("ACGT", repeat=k)) <= set(tokenizer.get_vocab())
    for sequence in _random_dna(5, 23, seed=k, n_rate=0.1) + ["A", "NNACGTACGTACGTAC"]:
        enc = tokenizer(sequence, return_offsets_mapping=True, return_special_tokens_mask=True)
        tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
        assert tokens[0] == "<cls>" and enc["special_tokens_mask"][0] == 1
        spans = [tuple(s) for s in enc["offset_mapping"][1:]]
        assert spans == _nt_split(sequence, k)
        assert tokens[1:] == [sequence[s:e] for s, e in spans]


def test_bpe_tokenizer_covers_each_base_once_with_cls_and_sep(bpe):
    assert {"[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"} <= set(bpe.get_vocab())
    for sequence in _random_dna(4, 50, seed=9):
        enc = bpe(sequence, return_offsets_mapping=True, return_special_tokens_mask=True)
        tokens = bpe.convert_ids_to_tokens(enc["input_ids"])
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        spans = [tuple(s) for s in enc["offset_mapping"][1:-1]]
        assert [s for s, _ in spans] == [0] + [e for _, e in spans[:-1]] and spans[-1][1] == len(sequence)
        assert "".join(tokens[1:-1]) == sequence
        assert max(len(t) for t in tokens[1:-1]) > 1  # merges were learned


# -- coverage, unchanged models, identical outputs ------------------------------------------------
@pytest.mark.parametrize("variant", ["attnlrp", "cp-lrp"])
@pytest.mark.parametrize("case", CASES)
def test_strict_coverage_identical_outputs_and_unchanged_model(case, variant, kmer3, bpe):
    model, tokenizer = _case(case, kmer3, bpe)
    before = snapshot(model)
    batch = tokenizer(SEQUENCES, padding=True, return_tensors="pt", return_token_type_ids=False)
    outside = model(**batch).logits
    with L.composites.get(variant).context(model):
        inside = model(**batch).logits
    assert torch.equal(inside, outside)
    explainer = TokenSequenceExplainer(model, tokenizer, composite=variant, strict=True)  # raises if uncovered
    result = explainer.explain(SEQUENCES, target=1, batch_size=4)
    expected = torch.softmax(outside.double(), -1)
    assert torch.equal(result.output, expected.to(result.output.dtype))
    assert result.relevance.shape == (4, 4, 31) and result.hypothetical.shape == (4, 4, 31)
    assert bool((result.relevance != 0).any())
    assert_unchanged(before, snapshot(model))


def test_model_unchanged_after_an_error_inside_the_explanation(kmer3):
    model = _esm(kmer3, "rotary")
    before = snapshot(model)
    explainer = TokenSequenceExplainer(model, kmer3)
    with pytest.raises((ValueError, IndexError)):
        explainer.explain(SEQUENCES, target=7)  # the model has 2 classes
    assert_unchanged(before, snapshot(model))


# -- the token-to-base mapping and the bookkeeping ----------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_bases_sum_to_their_token_and_everything_to_the_explained_value(case, kmer3, bpe):
    model, tokenizer = _case(case, kmer3, bpe)
    result = TokenSequenceExplainer(model, tokenizer).explain(SEQUENCES, target=0, batch_size=2)
    for i, sequence in enumerate(result.sequences):
        per_position = result.per_position[i]
        specials = 0.0
        for (start, end), special, value in zip(result.token_spans[i], result.special[i], result.token_relevance[i]):
            if special:
                specials += float(value)
                continue
            assert float(per_position[start:end].sum()) == pytest.approx(float(value), rel=1e-12, abs=1e-15)
            # equal shares on the observed bases (N: spread over the channels, nothing observed)
            for p in range(start, end):
                assert float(per_position[p]) == pytest.approx(float(value) / (end - start), rel=1e-12, abs=1e-15)
                observed = result.relevance[i, :, p]
                if sequence[p] == "N":
                    assert bool((observed == 0).all())
                else:
                    assert float(observed["ACGT".index(sequence[p])]) == float(per_position[p])
                    assert int((observed != 0).sum()) <= 1
        assert float(result.special_relevance[i]) == pytest.approx(specials, rel=1e-12, abs=1e-15)
        assert bool((result.per_position[i, len(sequence) :] == 0).all())
        total = float(result.per_position[i].sum() + result.special_relevance[i] + result.other_relevance[i])
        assert total + float(result.delta[i]) == pytest.approx(float(result.explained[i]), rel=1e-9, abs=1e-12)
    if case == "esm-rotary":
        assert bool((result.other_relevance == 0).all())  # no learned positions
    else:
        assert bool((result.other_relevance != 0).all())


@pytest.mark.parametrize("case", CASES)
def test_hypothetical_is_the_gradient_at_the_token_embedding_times_the_substituted_token(case, kmer3, bpe):
    """Independent reference: the modified gradient at the word embedding's output (a hook inside
    the composite), dotted with the embedding of the token with one base substituted."""
    model, tokenizer = _case(case, kmer3, bpe)
    sequences = SEQUENCES[:2]
    result = TokenSequenceExplainer(model, tokenizer).explain(sequences, target=1)
    embedding = model.get_input_embeddings()
    weight = embedding.weight.detach()
    vocab = tokenizer.get_vocab()
    batch = tokenizer(
        sequences, padding=True, return_tensors="pt", return_offsets_mapping=True, return_token_type_ids=False
    )
    offsets = batch.pop("offset_mapping")
    leaves = []
    with L.composites.get("attnlrp").context(model):
        handle = embedding.register_forward_hook(
            lambda m, a, out: leaves.append(out.detach().requires_grad_()) or leaves[-1]
        )
        try:
            logits = model(**batch).logits
        finally:
            handle.remove()
        (gradient,) = torch.autograd.grad(logits[:, 1].sum(), leaves[0])
    for i, sequence in enumerate(sequences):
        ids = batch["input_ids"][i]
        for t, (start, end) in enumerate(offsets[i].tolist()):
            if end <= start:
                continue
            token = sequence[start:end]
            for p in range(start, end):
                for b, letter in enumerate("ACGT"):
                    changed = token[: p - start] + letter + token[p - start + 1 :]
                    if changed == token:
                        expected = float(gradient[i, t] @ weight[ids[t]]) / (end - start)
                    elif changed in vocab:
                        expected = float(gradient[i, t] @ weight[vocab[changed]]) / (end - start)
                    else:
                        expected = 0.0  # BPE: no such token, documented as 0
                    assert float(result.hypothetical[i, b, p]) == pytest.approx(expected, rel=1e-7, abs=1e-12)
    if case.startswith("esm"):
        assert bool((result.hypothetical_coverage == 1).all())
    else:
        assert bool(((result.hypothetical_coverage > 0) & (result.hypothetical_coverage < 1)).all())


@pytest.mark.parametrize("case", CASES)
def test_hypothetical_at_the_observed_base_is_the_observed_relevance(case, kmer3, bpe):
    model, tokenizer = _case(case, kmer3, bpe)
    result = TokenSequenceExplainer(model, tokenizer, composite="cp-lrp").explain(SEQUENCES, target=1)
    at_observed = (result.hypothetical * result.onehot.double()).sum(1)
    torch.testing.assert_close(at_observed, result.relevance.sum(1), rtol=1e-9, atol=1e-14)
    # an alternative base gets a different value somewhere (it is not a copy of the observed one)
    alternatives = result.hypothetical * (1 - result.onehot.double())
    assert bool((alternatives != 0).any())


# -- conservation ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_cp_lrp_conserves_on_a_bias_free_model(case, kmer3, bpe):
    model, tokenizer = _case(case, kmer3, bpe)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
    result = TokenSequenceExplainer(model, tokenizer, composite="cp-lrp", strict=True).explain(
        SEQUENCES, target=lambda out: out[:, 1]
    )
    total = result.channel_relevance.sum((1, 2)) + result.special_relevance + result.other_relevance
    torch.testing.assert_close(total, result.explained, rtol=1e-6, atol=1e-12)
    assert bool((result.delta.abs() < 1e-6 * result.explained.abs().clamp_min(1e-12)).all())
    # with biases (transformers starts them at 0: set them) the network absorbs relevance: the check fails
    biased, _ = _case(case, kmer3, bpe)
    with torch.no_grad():
        for name, param in biased.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn_like(param) * 0.3)
    other = TokenSequenceExplainer(biased, tokenizer, composite="cp-lrp").explain(SEQUENCES, target=lambda o: o[:, 1])
    assert float(other.delta.abs().max()) > 1e-3 * float(other.explained.abs().max())


# -- seqlets and JASPAR matching on a token model ---------------------------------------------
def test_seqlets_land_on_the_planted_motif_and_match_it():
    """A k-mer model whose embeddings are zero except for the 6-mers covering a planted CTCF site:
    relevance (e * g) can only sit on those tokens, so the seqlets and their JASPAR match must
    name CTCF there, through the same seqlet and matching code as the CNN path."""
    pytest.importorskip("pyjaspar")
    from lrp_domains.bio import annotate_seqlets, call_seqlets

    tokenizer = kmer_tokenizer(6)
    model = _esm(tokenizer, "rotary", seed=3)
    consensus = "CCGCGCCCCCTGGTGGC"  # CTCF (MA0139) core
    background = _random_dna(4, 120, seed=11)
    sequences = [s[:42] + consensus + s[42 + len(consensus) :] for s in background]
    keep = set()
    for sequence in sequences:
        enc = tokenizer(sequence, return_offsets_mapping=True)
        keep |= {i for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]) if e > 42 and s < 42 + len(consensus)}
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype)
        mask[sorted(keep)] = 1
        weight.mul_(mask)
    result = TokenSequenceExplainer(model, tokenizer).explain(sequences, target=1)
    seqlets = call_seqlets(result, sign="both")
    assert len(seqlets) >= len(sequences) // 2
    for row in seqlets.itertuples():
        i = result.ids.index(row.id)
        assert row.sequence == result.sequences[i][row.start : row.end]
        assert float(row.relevance) == pytest.approx(float(result.per_position[i, row.start : row.end].sum()), rel=1e-6)
        assert row.end > 36 and row.start < 42 + len(consensus) + 6  # within the tokens around the site
    annotated = annotate_seqlets(seqlets, motifs="JASPAR2024")
    names = annotated.motif_name.fillna("").str.upper()
    assert names.str.contains("CTCF").mean() >= 0.5


# -- errors ---------------------------------------------------------------------------------
def test_clear_errors(kmer3, bpe):
    model = _esm(kmer3, "rotary")
    explainer = TokenSequenceExplainer(model, kmer3)
    with pytest.raises(InputError, match="empty sequence"):
        explainer.explain(["ACGT", ""])
    with pytest.raises(InputError, match=re.escape("symbol 'X' at position 3")):
        explainer.explain(["ACXGT"])
    with pytest.raises(InputError, match="at most"):
        explainer.explain(["ACGT" * 100])
    with pytest.raises(InputError, match="no sequences"):
        explainer.explain([])
    with pytest.raises(InputError, match="do not belong together"):
        TokenSequenceExplainer(model, kmer_tokenizer(4))  # 265 tokens, the model embeds 73
    with pytest.raises(InputError, match="do not belong together"):
        TokenSequenceExplainer(_bert(bpe), kmer3)  # padding ids differ
    with pytest.raises(InputError, match="row 7"):
        explainer.explain_batch(["a", "b"], ["ACGT", "AC-T"], first_row=6)
    assert isinstance(model.get_input_embeddings(), nn.Embedding)


# -- the contract -----------------------------------------------------------------------------
def test_registered_and_rows_follow_the_contract(kmer3, tmp_path):
    from lrp_domains import domains

    assert domains.get("dna-lm") is TokenSequenceExplainer
    model = _esm(kmer3, "rotary")
    explainer = TokenSequenceExplainer(model, kmer3)
    rows = explainer.explain_rows(["r1", "r1"], ["ACGTAGGN", "TTAGC"], first_row=3, target=1)
    assert list(rows.columns) == ["row", "id", *TokenSequenceExplainer.columns, "status"]
    assert rows.row.tolist() == [3, 4]
    single = explainer.explain(["TTAGC"], target=1)
    assert rows.relevance[1] == pytest.approx(single.per_position[0].tolist(), rel=1e-9, abs=1e-15)
    assert len(rows.hypothetical[0]) == 4 * 8
    fasta = tmp_path / "x.fa"
    fasta.write_text(">a\nACGTAC\n>b\nGGTTA\n")
    ids, items = explainer.reader(fasta).read(explainer.reader(fasta).shards(10)[0])
    assert ids == ["a", "b"] and list(items) == ["ACGTAC", "GGTTA"]
    model.save_pretrained(tmp_path / "m")
    kmer3.save_pretrained(tmp_path / "m")
    loaded = TokenSequenceExplainer.from_options(str(tmp_path / "m"))
    again = loaded.explain(["TTAGC"], target=1)
    torch.testing.assert_close(again.relevance.float(), single.relevance.float(), rtol=1e-4, atol=1e-8)
    with pytest.raises(InputError, match="no default model"):
        TokenSequenceExplainer.from_options(None)


@pytest.mark.workflow
# -- the workflow -------------------------------------------------------------------------------
def test_language_model_workflow_trains_caches_and_exports_what_it_explained(tmp_path):
    """workflows/bio/language_model_motifs.py --quick, tiny: the run's tfmodisco export holds the same
    hypothetical contributions as a direct explanation with the cached checkpoint, and the seqlet
    table is the one the report counts."""
    pytest.importorskip("pyjaspar")
    import importlib.util
    import json
    from pathlib import Path

    import pandas as pd

    script = Path(__file__).resolve().parents[1] / "workflows" / "bio" / "language_model_motifs.py"
    spec = importlib.util.spec_from_file_location("language_model_motifs", script)
    workflow = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(workflow)
    args = [
        "--quick",
        "--train",
        "300",
        "--epochs",
        "1",
        "--test",
        "16",
        "--modisco",
        "",
        "--logos",
        "1",
        "--checkpoint",
        str(tmp_path / "model"),
    ]
    written = workflow.main(["--out", str(tmp_path / "first"), *args])
    assert (tmp_path / "model" / "model.safetensors").exists()
    again = workflow.main(["--out", str(tmp_path / "second"), *args])  # loads the checkpoint
    summary = json.loads(again["summary"].read_text())
    assert summary == {**json.loads(written["summary"].read_text()), "training": summary["training"]}
    explainer = TokenSequenceExplainer.from_pretrained(tmp_path / "model")
    direct = explainer.explain(tmp_path / "second" / "positives.fa", target=1)
    attr = np.load(again["attr"])
    np.testing.assert_allclose(attr, direct.hypothetical.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.load(again["ohe"]), direct.onehot.numpy())
    seqlets = pd.read_csv(again["seqlets"])
    assert summary["seqlets"] == len(seqlets) and summary["explained"] == len(direct)
    assert set(seqlets.id) <= set(direct.ids)


def test_esm_intermediate_gets_lrp0_on_its_dense_and_the_identity_rule_on_its_erf_gelu(kmer3):
    """ESM writes GELU out with erf inside EsmIntermediate. Reference in float64: the identity rule
    R_z = R_y = y * g on the activation, then LRP-0 on the dense layer, R_x = x * W^T (R_z / z)."""
    model = _esm(kmer3, "rotary")
    block = model.esm.encoder.layer[0].intermediate
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    g = torch.randn(3, 5, 32, dtype=torch.float64)
    expected_out = block(x)
    z = block.dense(x)
    expected = x * ((expected_out * g / z) @ block.dense.weight)
    with L.composites.get("attnlrp").context(model):
        leaf = x.clone().requires_grad_()
        out = block(leaf)
        (grad,) = torch.autograd.grad(out, leaf, g)
    assert torch.equal(out.detach(), expected_out.detach())
    torch.testing.assert_close(leaf.detach() * grad, expected.detach(), rtol=1e-10, atol=1e-12)
