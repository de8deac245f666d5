"""Baseline attributions on cases with known answers; perturbation curves and summaries by hand."""

import itertools

import models as M
import pytest
import torch
from torch import nn

from lrp_domains import evaluate as E


@pytest.fixture
def linear():
    M.seeded(0)
    return nn.Linear(6, 3).double()


@pytest.fixture
def x():
    return torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_gradient_of_a_linear_model_is_its_weight_row(linear, x):
    result = E.gradient(linear, x, target=2)
    torch.testing.assert_close(result.relevance, linear.weight[2].detach().expand(5, -1))


def test_integrated_gradients_equal_gradient_x_input_on_linear_models(linear, x):
    ig = E.integrated_gradients(linear, x, target=1, steps=7)
    gxi = E.gradient_x_input(linear, x, target=1)
    torch.testing.assert_close(ig.relevance, gxi.relevance)
    torch.testing.assert_close(gxi.relevance, x * linear.weight[1].detach())


def test_integrated_gradients_are_complete_on_a_nonlinear_model(x):
    M.seeded(2)
    model = M.mlp(6, 16, 3, act=nn.Softplus).double().eval()
    ig = E.integrated_gradients(model, x, target=0, steps=256, batch_size=2)
    with torch.no_grad():
        difference = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
    torch.testing.assert_close(ig.relevance.sum(1), difference, rtol=1e-4, atol=1e-6)


def test_occlusion_of_a_linear_model(linear, x):
    result = E.occlusion(linear, x, target=0)
    torch.testing.assert_close(result.relevance, x * linear.weight[0].detach())


def test_ism_on_a_linear_one_hot_model():
    M.seeded(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4 * 5, 1)).double()
    x = M.one_hot_batch(3, 5, torch.Generator().manual_seed(0)).double()
    result = E.ism(model, x, target=0)
    W = model[1].weight.detach().reshape(4, 5)
    expected = torch.zeros_like(x)
    for n, position in itertools.product(range(3), range(5)):
        observed = int(x[n, :, position].argmax())
        others = [W[a, position] for a in range(4) if a != observed]
        expected[n, observed, position] = W[observed, position] - sum(others) / 3
    torch.testing.assert_close(result.relevance, expected)
    # position-occlusion of one-hot input with a zero baseline removes the observed base's weight
    occluded = E.occlusion(model, x, target=0, dim=2)
    torch.testing.assert_close(occluded.relevance, x * W)


def test_random_attribution_is_seeded(linear, x):
    a = E.random_attribution(linear, x, seed=3).relevance
    b = E.random_attribution(linear, x, seed=3).relevance
    c = E.random_attribution(linear, x, seed=4).relevance
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_removal_masks_count_rank_and_protect():
    relevance = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7]])
    protected = torch.tensor([[False, True, False, False, False]])
    morf = E.removal_masks(relevance, 0.5, order="morf", protected=protected)
    assert morf.tolist() == [[False, False, True, False, True]]  # ceil(0.5 * 4) = 2: 0.7 and 0.5
    lerf = E.removal_masks(relevance, 0.25, order="lerf", protected=protected)
    assert lerf.tolist() == [[True, False, False, False, False]]
    insertion = E.removal_masks(relevance, 0.25, order="morf", mode="insertion", protected=protected)
    assert insertion.tolist() == [[True, False, True, True, False]]  # 0.7 added back; the rest removed
    valid = torch.tensor([[True, True, True, False, False]])
    assert E.removal_masks(relevance, 1.0, valid=valid).tolist() == [[True, True, True, False, False]]


def test_curve_and_summaries_by_hand():
    inputs = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    relevance = inputs.clone()
    fractions = (0.0, 0.5, 1.0)

    def replace(values, removed):
        return values.masked_fill(removed, 0.0)

    morf = E.curve(lambda v: v.sum(1), inputs, relevance, replace, order="morf", fractions=fractions)
    lerf = E.curve(lambda v: v.sum(1), inputs, relevance, replace, order="lerf", fractions=fractions)
    assert morf.tolist() == [[10.0, 3.0, 0.0]] and lerf.tolist() == [[10.0, 7.0, 0.0]]
    assert E.area(morf, fractions).item() == pytest.approx((10 + 3) / 4 + (3 + 0) / 4)
    assert E.aopc(morf).item() == pytest.approx((0 + 7 + 10) / 3)
    assert E.abpc(morf, lerf, fractions).item() == pytest.approx(2.0)
    perturbed = E.curve(
        lambda v: torch.stack([v.sum(1), v.mean(1)], 1), inputs, relevance, replace, order="lerf", fractions=fractions
    )
    original = torch.tensor([[10.0, 2.5]])
    expected = [0.0, ((7 - 10) ** 2 + (1.75 - 2.5) ** 2) / 2, (10**2 + 2.5**2) / 2]
    assert E.au_mse(perturbed, original, fractions).item() == pytest.approx(
        (expected[0] + expected[1]) / 4 + (expected[1] + expected[2]) / 4
    )


def _brute_auroc(scores, labels):
    pairs = [(p, q) for p in scores[labels] for q in scores[~labels]]
    return sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in pairs) / len(pairs)


def _brute_aupr(scores, labels):
    # average precision over thresholds at each distinct score, descending
    total, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores.tolist()), reverse=True):
        chosen = scores >= threshold
        recall = float((chosen & labels).sum() / labels.sum())
        precision = float((chosen & labels).sum() / chosen.sum())
        total += (recall - previous_recall) * precision
        previous_recall = recall
    return total


def test_auroc_and_aupr_match_brute_force():
    g = torch.Generator().manual_seed(5)
    relevance = torch.randint(0, 6, (4, 12), generator=g).double()  # ties on purpose
    truth = torch.rand(4, 12, generator=g) > 0.6
    auroc, aupr = E.auroc(relevance, truth), E.aupr(relevance, truth)
    for i in range(4):
        assert auroc[i].item() == pytest.approx(_brute_auroc(relevance[i], truth[i]))
        assert aupr[i].item() == pytest.approx(_brute_aupr(relevance[i], truth[i]))
    perfect = E.auroc(truth.double(), truth)
    assert bool((perfect == 1).all())
    assert torch.isnan(E.auroc(relevance[:1], torch.zeros(1, 12, dtype=torch.bool))).all()


def test_groups_words_from_tokens_and_back():
    # two texts; tokens -> words (-1: special tokens / padding)
    relevance = torch.tensor([[0.5, 1.0, 2.0, 3.0, 0.1], [0.2, 4.0, 5.0, 0.3, 0.0]])
    groups = torch.tensor([[-1, 0, 0, 1, -1], [-1, 0, 1, -1, -1]])
    words = E.group_relevance(relevance, groups)
    assert words.tolist() == [[3.0, 3.0], [4.0, 5.0]]
    removed_words = E.removal_masks(words, 0.5, valid=torch.tensor([[True, True], [True, True]]))
    tokens = E.expand_groups(removed_words, groups)
    assert tokens.tolist() == [[False, True, True, False, False], [False, False, True, False, False]]


def test_position_groups_of_one_hot_sequences():
    x = M.one_hot_batch(2, 6, torch.Generator().manual_seed(0)).double()
    relevance = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * x
    positions = torch.arange(6).expand(2, 4, 6).reshape(2, -1)
    per_position = E.group_relevance(relevance.reshape(2, -1), positions)
    torch.testing.assert_close(per_position, relevance.sum(1))


class _Keyword(nn.Module):
    """A model of keyword inputs: floating-point ``x`` and an integer ``mask``; a softplus hidden layer."""

    def __init__(self):
        super().__init__()
        M.seeded(4)
        self.hidden = nn.Linear(6, 8).double()
        self.act = nn.Softplus()
        self.head = nn.Linear(8, 3).double()

    def forward(self, x, mask):
        return {"scores": self.head(self.act(self.hidden(x * mask)))}


def test_gradient_baselines_take_explains_hooks(x):
    model = _Keyword()
    mask = torch.ones(5, 6, dtype=torch.long)
    output = lambda raw, batch: raw["scores"]  # noqa: E731
    labels = ["a", "b", "c"]
    # keyword inputs: relevance of the floating-point ones, the integer mask passes through
    gxi = E.gradient_x_input(model, {"x": x, "mask": mask}, "b", output=output, labels=labels)
    plain = E.gradient_x_input(lambda_model(model, mask), x, 1)
    assert set(gxi.relevance) == {"x"}
    torch.testing.assert_close(gxi.relevance["x"], plain.relevance)
    torch.testing.assert_close(gxi.delta, plain.delta)
    assert gxi.target.tolist() == [1] * 5
    # sources: relevance read at a module's output (the head is linear after it: IG = gradient x input)
    hidden = model.act(model.hidden(x)).detach()
    at = E.gradient_x_input(model, {"x": x, "mask": mask}, 2, output=output, sources=["act"])
    torch.testing.assert_close(at.sources["act"], hidden * model.head.weight[2].detach())
    torch.testing.assert_close(at.relevance["x"], torch.zeros_like(x))  # relevance stops at the source
    ig = E.integrated_gradients(model, {"x": x, "mask": mask}, 2, output=output, sources=[nn.Softplus], steps=3)
    torch.testing.assert_close(ig.sources["act"], at.sources["act"])
    grad = E.gradient(model, {"x": x, "mask": mask}, 2, output=output, sources=["act"])
    torch.testing.assert_close(grad.sources["act"], model.head.weight[2].detach().expand(5, -1))


def lambda_model(model, mask):
    class Bound(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x, mask[: len(x)])["scores"]

    return Bound()
