"""Gene transformers (Geneformer/scGPT-style) explained through the text machinery.

Tiny random BERTs over a 10-gene vocabulary, built here; expectations are hand-computed rankings,
direct token-level calls, plain forward passes and conservation.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from models import assert_unchanged, snapshot

from lrp_domains.bio.cells.gene_tokens import GeneVocabulary, cell_sentences, value_bins
from lrp_domains.bio.cells.gene_transformer import (
    GeneTransformerExplainer,
    TrainedGeneTransformer,
    build_gene_transformer,
)
from lrp_domains.errors import InputError

GENES = [f"G{i}" for i in range(10)]
CLASSES = ["A", "B", "C"]
SPECIALS = 3  # [PAD], [CLS], [MASK]


def _data(n: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.gamma(1.0, 2.0, size=(n, len(GENES))) * (rng.random((n, len(GENES))) < 0.6)
    values[:, 0] = np.maximum(values[:, 0], 0.5)  # no empty cell
    return pd.DataFrame(values, index=[f"cell{i}" for i in range(n)], columns=GENES)


def _explainer(
    values: bool = False, composite: str = "attnlrp", max_genes: int = 8, bias: bool = True, strict: bool = True
) -> GeneTransformerExplainer:
    torch.manual_seed(0)
    data = _data()
    vocab = GeneVocabulary.fit(data.to_numpy(), GENES)
    model = (
        build_gene_transformer(
            vocab,
            len(CLASSES),
            values=values,
            max_genes=max_genes,
            hidden=16,
            layers=2,
            heads=2,
            intermediate=32,
            n_bins=4,
            classes=CLASSES,
        )
        .double()
        .eval()
    )
    with torch.no_grad():
        for param in model.parameters():  # larger weights than BERT's init, so relevance is not all at [CLS]
            param.mul_(3.0)
        for name, param in model.named_parameters():  # BERT initialises biases at 0: give them values
            if name.endswith("bias"):
                param.normal_(0.0, 0.3) if bias else param.zero_()
    return GeneTransformerExplainer(model, vocab, CLASSES, composite=composite, strict=strict)


# -- sentences ----------------------------------------------------------------------------------
def test_ranking_uses_geneformer_median_normalisation():
    # medians of nonzero values: A 20, B 1.5, C 2, D 3 (hand-computed)
    train = np.array([[10.0, 1.0, 0.0, 4.0], [20.0, 0.0, 3.0, 2.0], [30.0, 2.0, 1.0, 0.0]])
    vocab = GeneVocabulary.fit(train, ["A", "B", "C", "D"])
    np.testing.assert_allclose(vocab.medians, [20.0, 1.5, 2.0, 3.0])
    sentences = cell_sentences(train, vocab, max_genes=None)
    # cell 0: A .5, B .667, D 1.333 -> D B A (by raw values it would be A D B); C not expressed
    # cell 1: A 1, C 1.5, D .667 -> C A D; cell 2: A 1.5, B 1.333, C .5 -> A B C
    assert [vocab.tokens(row[m.bool()].tolist()) for row, m in zip(sentences.input_ids, sentences.attention_mask)] == [
        ["[CLS]", "D", "B", "A"],
        ["[CLS]", "C", "A", "D"],
        ["[CLS]", "A", "B", "C"],
    ]
    short = cell_sentences(train, vocab, max_genes=2)
    assert vocab.tokens(short.input_ids[0].tolist()) == ["[CLS]", "D", "B"]
    assert short.truncated.tolist() == [1, 1, 1]


def test_padding_and_value_bins():
    train = np.array([[0.0, 1.0, 2.0, 3.0, 4.0], [5.0, 0.0, 0.0, 0.0, 0.0]])
    vocab = GeneVocabulary(list("ABCDE"))  # medians 1: rank by the values themselves
    sentences = cell_sentences(train, vocab, max_genes=None, values=True, n_bins=2)
    assert sentences.input_ids.tolist() == [[1, 7, 6, 5, 4], [1, 3, 0, 0, 0]]
    assert sentences.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    # cell 0's nonzero values 1..4 split at their median 2.5: E, D high (2); C, B low (1); a cell with
    # one expressed gene has one value, at its own edge: the lowest bin
    assert sentences.value_ids.tolist() == [[0, 2, 2, 1, 1], [0, 1, 0, 0, 0]]
    assert value_bins(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), 2).tolist() == [0, 1, 1, 2, 2]


# -- relevance: token to gene -------------------------------------------------------------------
@pytest.mark.parametrize("values", [False, True])
def test_gene_relevance_is_its_tokens_relevance(values):
    explainer = _explainer(values=values, max_genes=5)
    data = _data()
    result = explainer.explain(data, target="B", batch_size=4)
    sentences, _ = explainer.sentences(data)
    assert int(sentences.truncated.max()) > 0  # some expressed genes fall outside the sentence
    for row in range(len(data)):
        inputs = sentences.model_inputs(row, row + 1)
        found, logits = explainer.text.attribute_sources(inputs, target=1)
        token = sum(found.values())[0].double()
        ids = inputs["input_ids"][0].tolist()
        expected = np.zeros(len(GENES))
        for position, token_id in enumerate(ids):
            if token_id >= SPECIALS:
                expected[token_id - SPECIALS] = float(token[position])
        np.testing.assert_allclose(result.relevance.iloc[row].to_numpy(), expected, rtol=1e-9, atol=1e-12)
        in_sentence = {GENES[i - SPECIALS] for i in ids if i >= SPECIALS}
        outside = [g for g in GENES if g not in in_sentence]
        assert outside and (result.relevance.iloc[row][outside] == 0).all()
        assert (result.relevance.iloc[row][sorted(in_sentence)] != 0).all()
        assert result.explained.iloc[row] == pytest.approx(float(logits[0, 1]))
        # the [CLS] token's relevance is what the genes leave of the explained score (plus biases)
        assert token.sum().item() == pytest.approx(token[1:].sum().item() + token[0].item())
    word = explainer.text._word_source
    assert any(name != word for name in found)  # position (and value) embeddings are part of a token


def test_batches_equal_single_cells_and_outputs_equal_plain_forward():
    explainer = _explainer(values=True)
    data = _data()
    whole = explainer.explain(data, batch_size=6)
    single = explainer.explain(data, batch_size=1)
    np.testing.assert_allclose(whole.relevance.to_numpy(), single.relevance.to_numpy(), rtol=1e-8, atol=1e-12)
    sentences, _ = explainer.sentences(data)
    with torch.no_grad():
        plain = explainer.model(**sentences.model_inputs()).logits
    np.testing.assert_allclose(whole.output.to_numpy(), plain.numpy(), rtol=1e-12, atol=1e-12)
    assert list(whole.prediction) == [CLASSES[i] for i in plain.argmax(1).tolist()]


@pytest.mark.parametrize("values", [False, True])
def test_cp_lrp_conserves_on_a_bias_free_gene_transformer(values):
    explainer = _explainer(values=values, composite="cp-lrp", bias=False)
    sentences, _ = explainer.sentences(_data())
    tokens = explainer.explain_tokens(sentences, target="C", batch_size=3)
    np.testing.assert_allclose(tokens.relevance.sum(1).numpy(), tokens.explained.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(tokens.explained.numpy(), tokens.logits[:, 2].numpy())
    result = explainer.explain(_data(), target="C")
    np.testing.assert_allclose(result.delta.to_numpy(), tokens.relevance[:, 0].numpy(), rtol=1e-8, atol=1e-9)


def test_biases_break_exact_conservation():
    # the conservation above is a property of the bias-free model, not of the bookkeeping
    explainer = _explainer(composite="cp-lrp", bias=True)
    sentences, _ = explainer.sentences(_data())
    tokens = explainer.explain_tokens(sentences, target="C")
    assert not np.allclose(tokens.relevance.sum(1).numpy(), tokens.explained.numpy(), rtol=1e-6, atol=1e-6)


# -- the model comes back unchanged; strict mode ------------------------------------------------
@pytest.mark.parametrize("values", [False, True])
def test_model_unchanged_also_after_an_error(values):
    explainer = _explainer(values=values)
    model = explainer.model
    model.train()
    before = snapshot(model)
    explainer.explain(_data())
    assert_unchanged(before, snapshot(model))
    with pytest.raises(ValueError, match="out of range"):
        explainer.explain(_data(), target=7)
    assert_unchanged(before, snapshot(model))
    assert model.training


@pytest.mark.parametrize("values", [False, True])
@pytest.mark.parametrize("composite", ["attnlrp", "cp-lrp"])
def test_strict_mode_names_no_uncovered_operation(values, composite):
    explainer = _explainer(values=values, composite=composite, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = explainer.explain(_data())
    assert np.isfinite(result.relevance.to_numpy()).all()


# -- downstream: rankings, markers, AnnData, save/load, registry --------------------------------
def test_gene_explanation_tools_work_unchanged(tmp_path):
    import anndata as ad

    explainer = _explainer()
    data = _data()
    result = explainer.explain(data, target=["A", "B", "A", "C", "B", "A"])
    ranking = result.rank_genes("class", n=3)
    assert set(ranking["group"]) == {"A", "B", "C"}
    top_a = result.relevance.iloc[[0, 2, 5]].mean(0).sort_values(ascending=False).index[:3].tolist()
    assert ranking[ranking["group"] == "A"]["gene"].tolist() == top_a
    markers = result.marker_overlap({"A": top_a[:2] + ["NOT_A_GENE"]}, k=(3,))
    assert markers["recall"].iloc[0] == 1.0
    # float64: in float32 the exact ties of genes seen in one cell (normalised value 1) break differently
    adata = ad.AnnData(
        data.to_numpy(dtype=np.float64), obs=pd.DataFrame(index=data.index), var=pd.DataFrame(index=GENES)
    )
    result.to_anndata(adata)
    np.testing.assert_allclose(adata.layers["lrp"], result.relevance.to_numpy(), rtol=1e-6)
    again = explainer.explain(adata, target=["A", "B", "A", "C", "B", "A"])
    np.testing.assert_allclose(again.relevance.to_numpy(), result.relevance.to_numpy(), rtol=1e-5, atol=1e-7)
    rows = explainer.explain_rows(list(data.index), data, target="A")
    assert list(rows.columns) == ["row", "id", *explainer.columns, "status"] and len(rows["relevance"][0]) == len(GENES)
    from lrp_domains.report.genes import write_gene_report

    written = write_gene_report(result, tmp_path / "report", markers={"A": top_a[:2]})
    assert pd.read_parquet(written["relevance"]).equals(result.relevance)
    assert top_a[0] in (tmp_path / "report" / "report.html").read_text()


def test_save_load_and_registry(tmp_path):
    from lrp_domains import domains

    explainer = _explainer(values=True)
    trained = TrainedGeneTransformer(explainer.model.float(), explainer.vocab, CLASSES)
    trained.save(tmp_path / "gt")
    loaded = domains.get("gene-transformer").from_options(str(tmp_path / "gt"), composite="cp-lrp")
    assert loaded.composite.name == "cp-lrp" and loaded.settings()["values"] is True
    sentences, _ = loaded.sentences(_data())
    with torch.no_grad():
        ours = explainer.model(**sentences.model_inputs()).logits
        theirs = loaded.model(**sentences.model_inputs()).logits
    torch.testing.assert_close(ours, theirs)
    with pytest.raises(InputError, match="holds no gene transformer"):
        domains.get("gene-transformer").from_options(str(tmp_path / "nothing"))


# -- bad input ----------------------------------------------------------------------------------
def test_bad_input_gives_clear_errors():
    explainer = _explainer()
    data = _data()
    with pytest.raises(InputError, match="not in the model's vocabulary.*NOVEL"):
        explainer.explain(data.assign(NOVEL=1.0))
    ignored = explainer.explain(data.assign(NOVEL=1.0), unknown="ignore")
    np.testing.assert_allclose(ignored.relevance.to_numpy(), explainer.explain(data).relevance.to_numpy())
    empty = data.copy()
    empty.loc["cell3"] = 0.0
    with pytest.raises(InputError, match="express none.*cell3"):
        explainer.explain(empty)
    with pytest.raises(InputError, match="negative values"):
        explainer.explain(data - 1.0)
    with pytest.raises(InputError, match="one column per vocabulary gene"):
        explainer.explain(data.to_numpy()[:, :4])
    with pytest.raises(InputError, match="none of the data's genes"):
        explainer.explain(pd.DataFrame([[1.0]], columns=["X"]), unknown="ignore")
    with pytest.raises(InputError, match="twice"):
        GeneVocabulary(["A", "B", "A"])
    with pytest.raises(InputError, match="not in the vocabulary"):
        explainer.vocab.id_of("NOVEL")
