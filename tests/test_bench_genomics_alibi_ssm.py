"""``lrp-domains bench genomics-models`` rows for the DNABERT-2-like ALiBi encoder and the Caduceus-like
state-space model: the exact one-hot front end, every method's row, the model cache."""

from __future__ import annotations

import pytest
import torch

from lrp_domains.bench.data.synthetic import make_dataset
from lrp_domains.bench.genomics import models as G

pytest.importorskip("transformers")


def _model(kind: str):
    from lrp_domains.bench.data.alibi_encoder import AlibiEncoderForSequenceClassification, alibi_config
    from lrp_domains.bench.data.caduceus_like import CaduceusLikeForSequenceClassification, caduceus_config
    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    torch.manual_seed(3)
    if kind == "alibi":
        tokenizer = kmer_tokenizer(3)
        model = AlibiEncoderForSequenceClassification(alibi_config(tokenizer, hidden_size=16, heads=2, layers=1))
    else:
        tokenizer = kmer_tokenizer(1)
        model = CaduceusLikeForSequenceClassification(caduceus_config(tokenizer, hidden_size=8, layers=1, state_size=4))
    with torch.no_grad():
        model.classifier.weight.mul_(50)
    return model.eval(), tokenizer


@pytest.mark.parametrize("kind", ["alibi", "caduceus"])
def test_one_hot_front_end_gives_the_models_logits(kind):
    from lrp_domains.bench.data.nt_like import predict

    model, tokenizer = _model(kind)
    data = make_dataset(4, seed=9, length=47, motifs_per_sequence=(1, 1))
    expected = predict(model, tokenizer, data.sequences)
    wrapped = G.OneHotKmerModel(model, tokenizer)
    with torch.no_grad():
        looked_up = wrapped(data.onehot)
    torch.testing.assert_close(looked_up, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(wrapped(data.onehot).detach(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["alibi", "caduceus"])
def test_case_rows_cover_every_method(kind):
    from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer

    model, tokenizer = _model(kind)
    data = make_dataset(4, seed=11, length=30, positive_fraction=1.0, motifs_per_sequence=(1, 1))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    label = f"{G.TOKEN_MODELS[kind][0]}, class logit"
    case = G.nt_case(
        model, tokenizer, data.onehot, data.sequences, data.truth, ig_steps=2, shuffles=2, fit={}, label=label
    )
    rows = G.score_case(case, repeats=1)
    assert [row["method"] for row in rows] == [
        "ours: attnlrp",
        "ours: cp-lrp",
        "gradient x input",
        "integrated gradients",
        "ism",
        "deep_lift_shap",
    ]
    assert all(row["case"] == label and 0.0 <= row["AUROC"] <= 1.0 and row["cost"] > 0 for row in rows)
    assert all(torch.equal(before[n], v) for n, v in model.state_dict().items())
    assert not model.training
    expected = (
        TokenSequenceExplainer(model, tokenizer, composite="cp-lrp", strict=True)
        .explain(data.sequences, target=1, hypothetical=False)
        .relevance.sum(1)
    )
    torch.testing.assert_close(case.methods["ours: cp-lrp"](), expected)


@pytest.mark.parametrize("kind", ["alibi", "caduceus"])
def test_token_model_cache_loads_without_retraining(tmp_path, kind):
    settings = dict(G.SETTINGS["quick"][kind], n_train=16, n_validation=8)
    lines: list[str] = []
    first, tokenizer, record = G.token_model(kind, tmp_path, settings, lines.append)
    second, _, again = G.token_model(kind, tmp_path, settings, lines.append)
    assert len(lines) == 1 and list(tmp_path.glob(f"{kind}-*.safetensors"))
    assert record == again and 0.0 <= record["fit"]["validation_accuracy"] <= 1.0
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    batch = dict(tokenizer(["ACGTACGGT"], return_tensors="pt", return_token_type_ids=False))
    with torch.no_grad():
        torch.testing.assert_close(first(**batch).logits, second(**batch).logits)
