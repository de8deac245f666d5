"""The public explain() contract: targets, dtypes, batching, grad modes, errors, results."""

import warnings

import models as M
import pandas as pd
import pytest
import torch

import lrp_domains as L


@pytest.fixture
def mlp():
    M.seeded(0)
    return M.mlp(10, 16, 3).eval()


@pytest.fixture
def x():
    return torch.randn(7, 10, generator=torch.Generator().manual_seed(1))


def test_result_fields(mlp, x):
    result = L.explain(mlp, x)
    out = mlp(x)
    assert result.relevance.shape == x.shape
    torch.testing.assert_close(result.output, out.detach())
    assert not result.output.requires_grad and not result.relevance.requires_grad
    assert result.target.dtype == torch.long
    torch.testing.assert_close(result.target, out.argmax(1))
    torch.testing.assert_close(result.explained, out.gather(1, result.target[:, None])[:, 0].detach())
    torch.testing.assert_close(result.delta, result.explained - result.relevance.sum(1))


def test_int_sequence_and_tensor_targets_agree(mlp, x):
    by_int = L.explain(mlp, x, target=2)
    by_list = L.explain(mlp, x, target=[2] * len(x))
    by_tensor = L.explain(mlp, x, target=torch.full((len(x),), 2))
    assert bool((by_int.target == 2).all())
    torch.testing.assert_close(by_int.relevance, by_list.relevance)
    torch.testing.assert_close(by_int.relevance, by_tensor.relevance)


def test_per_example_targets_select_each_row(mlp, x):
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    result = L.explain(mlp, x, target=targets)
    for cls in range(3):
        single = L.explain(mlp, x, target=cls)
        rows = targets == cls
        torch.testing.assert_close(result.relevance[rows], single.relevance[rows])


def test_contrastive_callable_is_the_difference_of_two_explanations(mlp, x):
    # The rules are linear in the output relevance, so explaining out1 - out0 equals explaining
    # out1 minus explaining out0.
    contrast = L.explain(mlp, x, target=lambda out: out[:, 1] - out[:, 0])
    one, zero = L.explain(mlp, x, target=1), L.explain(mlp, x, target=0)
    assert contrast.target is None
    torch.testing.assert_close(contrast.relevance, one.relevance - zero.relevance)
    torch.testing.assert_close(contrast.explained, one.explained - zero.explained)


def test_callable_with_wrong_shape_is_a_clear_error(mlp, x):
    with pytest.raises(ValueError, match="one value per example"):
        L.explain(mlp, x, target=lambda out: out)


@pytest.mark.parametrize("target", [3, -1, [0, 1]])
def test_bad_targets_are_clear_errors(mlp, x, target):
    with pytest.raises(ValueError, match="out of range|per-example targets"):
        L.explain(mlp, x, target=target)


def test_works_under_no_grad_and_on_inputs_without_grad(mlp, x):
    reference = L.explain(mlp, x)
    with torch.no_grad():
        inside = L.explain(mlp, x)
    torch.testing.assert_close(inside.relevance, reference.relevance)
    assert not x.requires_grad


def test_input_that_requires_grad_is_left_alone(mlp, x):
    x = x.clone().requires_grad_(True)
    L.explain(mlp, x)
    assert x.grad is None


def test_float64_and_float32_agree(mlp, x):
    single = L.explain(mlp, x)
    double = L.explain(mlp.double(), x.double())
    assert double.relevance.dtype == torch.float64
    torch.testing.assert_close(single.relevance.double(), double.relevance, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("composite", ["epsilon", "zplus", "alpha2beta1", "epsilon-plus"])
def test_batches_equal_the_unbatched_result(composite):
    g = M.seeded(4)
    model = M.randomize_batchnorm(M.cnn1d(), g).eval()
    x = M.one_hot_batch(9, 32, g)
    whole = L.explain(model, x, composite=composite)
    for size in (1, 4):
        batched = L.explain(model, x, composite=composite, batch_size=size, progress=size == 4)
        torch.testing.assert_close(batched.relevance, whole.relevance, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(batched.delta, whole.delta, rtol=1e-5, atol=1e-6)


def test_integer_one_hot_inputs_are_cast_to_the_model_dtype():
    g = M.seeded(5)
    model = M.cnn1d().eval()
    x = M.one_hot_batch(3, 32, g)
    as_float = L.explain(model, x, composite="epsilon-plus")
    as_int = L.explain(model, x.long(), composite="epsilon-plus")
    torch.testing.assert_close(as_int.relevance, as_float.relevance)


def test_device_must_match_the_model(mlp, x):
    with pytest.raises(ValueError, match="model.to"):
        L.explain(mlp, x, device="meta")
    L.explain(mlp, x, device="cpu")


def test_model_must_return_a_tensor(x):
    class Dict(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(10, 2)

        def forward(self, v):
            return {"logits": self.linear(v)}

    with pytest.raises(TypeError, match="returns a tensor"):
        L.explain(Dict(), x)


def test_bad_arguments(mlp, x):
    with pytest.raises(ValueError, match="batch_size"):
        L.explain(mlp, x, batch_size=0)
    with pytest.raises(ValueError, match="unknown composite"):
        L.explain(mlp, x, composite="nope")
    with pytest.raises(ValueError, match="batch dimension"):
        L.explain(mlp, torch.tensor(1.0))
    with pytest.raises(ValueError, match="low= and high="):
        L.explain(mlp, x, composite="epsilon-gamma-box")


def test_to_frame_long_table(mlp, x):
    result = L.explain(mlp, x[:2])
    frame = result.to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 2 * 10
    assert list(frame.columns) == ["example", "d1", "relevance", "explained", "delta", "target"]
    row = frame[(frame.example == 1) & (frame.d1 == 4)].iloc[0]
    assert row.relevance == pytest.approx(result.relevance[1, 4].item())
    assert row.target == result.target[1].item()


def test_named_composites_are_listed_and_configurable():
    assert set(L.composites.names()) >= {"epsilon", "zplus", "alpha2beta1", "epsilon-plus", "epsilon-gamma-box"}
    composite = L.composites.get("epsilon-gamma-box", low=-1.0, high=2.0, gamma=0.5)
    assert composite.first.low == -1.0 and composite.first.high == 2.0
    assert any(getattr(rule, "gamma", None) == 0.5 for rule in composite.rules.values())


def test_large_delta_is_reported_but_not_an_error(x):
    """Relevance absorbed by biases shows in delta; explain still returns."""
    M.seeded(6)
    model = M.mlp(10, 16, 3)
    with torch.no_grad():
        model[4].bias.fill_(10.0)
    with pytest.warns(UserWarning, match="lost or gained more than 50%"):
        result = L.explain(model, x)
    assert bool((result.delta.abs() > 5).all())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L.explain(M.mlp(10, 16, 3, bias=False), x)
