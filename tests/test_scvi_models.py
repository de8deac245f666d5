"""scANVI adapter: counts in, gene relevance out, through scANVI's own modules."""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from models import assert_unchanged, snapshot
from torch import nn

from lrp_domains import explain
from lrp_domains.bio.cells import scvi_models as S
from lrp_domains.core import composites
from lrp_domains.core.engine.coverage import LRPCoverageError
from lrp_domains.core.functional import IDENTITY_RULE_OPS
from lrp_domains.errors import InputError

COMPOSITES = ("epsilon", "epsilon-gamma", "zplus", "alpha2beta1")
CLASSES = ("alpha", "beta", "gamma")


def _counts(n_cells: int = 90, n_genes: int = 24, seed: int = 0) -> ad.AnnData:
    """Poisson counts; class k has genes 6k..6k+5 four times as expressed; varying library sizes."""
    rng = np.random.default_rng(seed)
    labels = np.array([CLASSES[i % 3] for i in range(n_cells)])
    rates = np.full((n_cells, n_genes), 1.5)
    for k in range(3):
        rates[labels == CLASSES[k], 6 * k : 6 * k + 6] *= 4.0
    rates *= rng.uniform(0.5, 2.0, size=(n_cells, 1))
    counts = rng.poisson(rates).astype(np.float32)
    obs = pd.DataFrame({"cell_type": labels}, index=[f"cell{i}" for i in range(n_cells)])
    return ad.AnnData(counts, obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]))


@pytest.fixture(scope="module")
def trained():
    data = _counts()
    model = S.train_scanvi(
        data, labels_key="cell_type", held_out=list(data.obs_names[:9]), n_latent=3, n_hidden=8, max_epochs=3
    )
    return model, data


def _zero_biases(module: nn.Module) -> nn.Module:
    """A float64 copy of ``module`` with every bias (and BatchNorm shift) zero."""
    module = copy.deepcopy(module).double()
    with torch.no_grad():
        for layer in module.modules():
            if getattr(layer, "bias", None) is not None:
                layer.bias.zero_()
            if isinstance(layer, nn.BatchNorm1d):
                layer.running_mean.zero_()
    return module


def test_log1p_has_the_identity_rule():
    assert "log1p" in IDENTITY_RULE_OPS


def test_classifier_logits_equal_scanvis_own(trained):
    model, data = trained
    clf = S.scanvi_classifier(model)
    x = torch.as_tensor(data.X)
    with torch.no_grad():
        ours = clf(x)
        theirs = model.module.classify(x)  # scANVI's own path: log1p, z_encoder posterior mean, classifier
    torch.testing.assert_close(ours, theirs)
    soft = model.predict(soft=True)  # scvi-tools' public API, on the training AnnData (same cells)
    assert list(soft.columns) == S.classes_of(model) and set(S.classes_of(model)) == set(CLASSES)
    np.testing.assert_allclose(soft.to_numpy(), ours.softmax(-1).numpy(), atol=1e-6)


def test_latent_targets_equal_hand_computed(trained):
    model, data = trained
    x = torch.as_tensor(data.X)
    with torch.no_grad():
        qz, _ = model.module.z_encoder(torch.log1p(x))
        z = qz.loc.numpy()
        np.testing.assert_allclose(S.latent_module(model)(x).numpy(), z, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(S.latent_module(model, dim=2)(x).numpy(), z[:, 2:3], rtol=1e-6, atol=1e-6)
        centroid = z[data.obs["cell_type"].to_numpy() == "beta"].mean(0)
        distance = S.latent_module(model, centroid=centroid)(x).numpy()[:, 0]
    expected = -np.array([sum((zi - ci) ** 2 for zi, ci in zip(row, centroid)) for row in z.tolist()])
    np.testing.assert_allclose(distance, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", COMPOSITES)
def test_outputs_inside_the_context_equal_outside(trained, name):
    model, data = trained
    x = torch.as_tensor(data.X)
    for net in (S.scanvi_classifier(model).eval(), S.latent_module(model, centroid=[0.1, -0.2, 0.3]).eval()):
        with torch.no_grad():
            outside = net(x)
        with S.scanvi_composite(name).context(net), torch.no_grad():
            inside = net(x)
        torch.testing.assert_close(inside, outside, rtol=1e-5, atol=1e-5)  # merged BatchNorm: rounding only


@pytest.mark.parametrize("name", COMPOSITES)
def test_strict_mode_finds_every_operation_covered(trained, name):
    model, data = trained
    x = torch.as_tensor(data.X)
    explain(S.scanvi_classifier(model), x, None, S.scanvi_composite(name), strict=True, check_delta=False)
    explain(
        S.latent_module(model, centroid=[0.0, 1.0, 0.0]), x, 0, S.scanvi_composite(name), strict=True, check_delta=False
    )


def test_strict_mode_names_what_is_left():
    class Exp(nn.Module):
        def forward(self, x):
            return torch.exp(x).sum(1, keepdim=True)

    with pytest.raises(LRPCoverageError, match="exp"):
        explain(Exp(), torch.ones(2, 3), 0, S.scanvi_composite("epsilon"), strict=True)


def test_explainer_contract_and_model_unchanged(trained):
    model, data = trained
    module = model.module
    module.train()  # a training-mode model must come back in training mode
    before = snapshot(module)
    try:
        explanation = S.explainer(model).explain(data, target=data.obs["cell_type"].tolist())
    finally:
        after = snapshot(module)
        module.eval()
    assert_unchanged(before, after)
    assert explanation.genes == S.genes_of(model) and explanation.relevance.shape == data.shape
    with torch.no_grad():
        logits = model.module.classify(torch.as_tensor(data.X))
    np.testing.assert_allclose(explanation.output.to_numpy(), logits.double().numpy(), rtol=1e-5, atol=1e-5)
    # zero counts carry no relevance: log1p(0) = 0 under the identity rule
    assert (explanation.relevance.to_numpy()[data.X == 0] == 0).all()
    top = explanation.rank_genes("class", n=6)
    assert set(top["group"]) == set(CLASSES)
    stored = explanation.to_anndata(data.copy(), n=6)
    np.testing.assert_allclose(stored.layers["lrp"], explanation.relevance.to_numpy(), rtol=1e-6)


def test_model_unchanged_after_an_error(trained):
    model, data = trained
    before = snapshot(model.module)

    def failing(scores):
        raise RuntimeError("target failed")

    with pytest.raises(RuntimeError, match="target failed"):
        explain(S.scanvi_classifier(model), torch.as_tensor(data.X), failing, S.scanvi_composite("epsilon-gamma"))
    negative = data.to_df().copy()
    negative.iloc[3, 2] = -1.0
    with pytest.raises(InputError, match="negative"):
        S.explainer(model).explain(negative)  # raised inside the scope, in the forward
    assert_unchanged(before, snapshot(model.module))


def _float64_classifier(module: nn.Module) -> nn.Module:
    return S.scanvi_classifier(module).double()


def test_conservation_with_biases_zeroed(trained):
    """Zero biases (BatchNorm shift included), epsilon -> 0: every rule on the path (identity for
    log1p, epsilon for the merged Linear+BatchNorm, ReLU passing) conserves, so the summed
    relevance equals the explained logit; and the squared distance's uniform product rule gives
    exactly -||z||^2 at a zero centroid."""
    model, data = trained
    module = _zero_biases(model.module)
    x = torch.as_tensor(data.X, dtype=torch.float64)
    tiny = S.scanvi_composite(composites.get("epsilon", epsilon=1e-12))
    result = explain(_float64_classifier(module), x, None, tiny)
    assert result.explained.abs().mean() > 5e-3  # not a trivial zero
    torch.testing.assert_close(result.relevance.sum(1), result.explained, rtol=1e-7, atol=1e-9)
    latent = S.latent_module(module, centroid=np.zeros(3)).double()
    result = explain(latent, x, 0, tiny)
    with torch.no_grad():
        z = module.z_encoder(torch.log1p(x))[0].loc
    torch.testing.assert_close(result.explained, -(z**2).sum(1))
    torch.testing.assert_close(result.relevance.sum(1), result.explained, rtol=1e-7, atol=1e-9)


def test_layer_norm_rule_conserves_and_keeps_outputs():
    """An scANVI module with LayerNorm (no BatchNorm): std treated as constant keeps the
    relevance (the centring is linear and zero-sum); outputs inside equal outside."""
    import scvi

    torch.manual_seed(0)
    module = scvi.module.SCANVAE(
        n_input=12, n_labels=3, n_hidden=8, n_latent=3, use_batch_norm="none", use_layer_norm="both"
    ).eval()
    before = snapshot(module)
    clf = S.scanvi_classifier(_zero_biases(module))
    x = torch.as_tensor(_counts(n_genes=12).X[:20], dtype=torch.float64)
    with torch.no_grad():
        outside = clf(x)
    with S.scanvi_composite("epsilon").context(clf), torch.no_grad():
        torch.testing.assert_close(clf(x), outside)
    result = explain(clf, x, None, S.scanvi_composite(composites.get("epsilon", epsilon=1e-12)), strict=True)
    torch.testing.assert_close(result.relevance.sum(1), result.explained, rtol=1e-7, atol=1e-9)
    explain(S.scanvi_classifier(module), x.float(), None, S.scanvi_composite("epsilon"), strict=True)
    assert_unchanged(before, snapshot(module))


def test_library_size_denominator_is_a_constant():
    """w . (x / sum(x)) for two genes, x = (1, 3), w = (2, -1): with the denominator constant,
    R_i = x_i w_i / 4 = (0.5, -0.75), summing to the output -0.25 (the plain gradient would give
    relevance summing to 0: the map is scale-invariant)."""

    class Normalised(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(2, 1, bias=False)
            with torch.no_grad():
                self.head.weight.copy_(torch.tensor([[2.0, -1.0]], dtype=torch.float64))

        def forward(self, x):
            return self.head(x / x.sum(1, keepdim=True))

    net = Normalised().double()
    x = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    result = explain(net, x, 0, S.scanvi_composite(composites.get("epsilon", epsilon=1e-12)), strict=True)
    torch.testing.assert_close(result.relevance, torch.tensor([[0.5, -0.75]], dtype=torch.float64))
    torch.testing.assert_close(result.explained, torch.tensor([-0.25], dtype=torch.float64))


def test_bad_input_gives_clear_errors(trained):
    model, data = trained
    renamed = data.copy()
    renamed.var_names = [f"ENSG{j:05d}" for j in range(renamed.n_vars)]
    with pytest.raises(ValueError, match="genes are not in the data"):
        S.explainer(model).explain(renamed)
    with pytest.raises(InputError, match="negative"):
        S.scanvi_classifier(model)(-torch.ones(2, data.n_vars))
    with pytest.raises(InputError, match=r"shape \(cells, 24\)"):
        S.scanvi_classifier(model)(torch.ones(2, 5))
    with pytest.raises(InputError, match="dim must be in 0..2"):
        S.latent_module(model, dim=3)
    with pytest.raises(InputError, match="centroid must be 3"):
        S.latent_module(model, centroid=[0.0, 1.0])
    with pytest.raises(InputError, match="negative"):
        S.train_scanvi(
            ad.AnnData(
                -np.ones((4, 3), dtype=np.float32), obs=pd.DataFrame({"bulk_labels": list("abab")}, index=list("wxyz"))
            )
        )


def test_cache_is_safetensors_and_reloads_the_same_model(tmp_path):
    data = _counts(60, 12, seed=3)
    train = {
        "labels_key": "cell_type",
        "held_out": list(data.obs_names[:6]),
        "n_latent": 2,
        "n_hidden": 8,
        "max_epochs": 2,
    }
    first = S.load_or_train(tmp_path / "cache", data, **train)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["settings.json", "weights.safetensors"]
    again = S.load_or_train(tmp_path / "cache", data, **train)  # loaded, not trained: same weights
    counts = torch.as_tensor(data.X[:10])
    with torch.no_grad():
        assert torch.equal(S.scanvi_classifier(first)(counts), S.scanvi_classifier(again)(counts))
    assert S.classes_of(again) == S.classes_of(first)
    # other settings are a cache miss: trained anew, and the cache rewritten for them
    other = S.load_or_train(tmp_path / "cache", data, **{**train, "n_latent": 3})
    assert other.module.n_latent == 3
