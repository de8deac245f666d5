"""The engine is scoped: models come back unchanged, also after errors, and never interfere."""

import threading

import models as M
import pytest
import torch
from models import assert_unchanged, snapshot

import lrp_domains as L


def _prepared_model():
    g = M.seeded(0)
    model = M.randomize_batchnorm(M.cnn1d(), g)
    model.train()  # explain switches to eval inside and must switch back
    model[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    model[3].register_forward_hook(lambda m, i, o: None)
    model[9].register_forward_pre_hook(lambda m, i: None)
    custom = model[4].forward
    model[4].forward = lambda x: custom(x)  # an instance-level forward (as accelerate sets)
    model[11].weight.grad = torch.ones_like(model[11].weight)
    return model, M.one_hot_batch(4, 32, g)


@pytest.mark.parametrize("composite", ["epsilon", "epsilon-plus", "alpha2beta1"])
def test_model_is_returned_unchanged(composite):
    model, x = _prepared_model()
    before = snapshot(model)
    L.explain(model, x, composite=composite)
    assert_unchanged(before, snapshot(model))


def test_model_is_unchanged_after_an_exception_in_forward():
    model = M.RaisingNet()
    model.train()
    before = snapshot(model)
    model.fail = True
    with pytest.raises(RuntimeError, match="on purpose"):
        L.explain(model, torch.randn(3, 6), composite="zplus")
    model.fail = False
    after = snapshot(model)
    assert_unchanged(before, after)


def test_model_is_unchanged_after_an_error_in_the_backward():
    model, x = _prepared_model()
    before = snapshot(model)
    with pytest.raises(ValueError):
        L.explain(model, x, target=5)
    assert_unchanged(before, snapshot(model))


def test_context_restores_after_exception_inside_the_block():
    model, x = _prepared_model()
    model.eval()  # a training-mode forward would update BatchNorm statistics, as it should
    before = snapshot(model)
    with pytest.raises(KeyError):
        with L.composites.get("epsilon").context(model):
            model(x)
            raise KeyError("user code failed")
    assert_unchanged(before, snapshot(model))


def test_outputs_inside_the_context_equal_those_outside():
    g = M.seeded(1)
    model = M.cnn1d(batchnorm=False).eval()
    x = M.one_hot_batch(5, 32, g)
    outside = model(x)
    for name in L.composites.names():
        composite = L.composites.get(name, **({"low": 0.0, "high": 1.0} if name == "epsilon-gamma-box" else {}))
        with composite.context(model) as scope:
            (leaf,) = scope.track(x)
            inside = model(leaf)
        assert torch.equal(inside, outside), name


def test_two_models_one_after_the_other_do_not_interfere():
    g = M.seeded(2)
    a, b = M.mlp(6, 8, 3).eval(), M.cnn1d().eval()
    xa, xb = torch.randn(4, 6, generator=g), M.one_hot_batch(4, 32, g)
    alone_a = L.explain(a, xa, composite="zplus").relevance
    alone_b = L.explain(b, xb, composite="epsilon").relevance
    with L.composites.get("zplus").context(a):
        # b outside any context: its plain gradient is untouched by a's context.
        xb_leaf = xb.clone().requires_grad_(True)
        out = b(xb_leaf)
        (grad,) = torch.autograd.grad(out[:, 0].sum(), xb_leaf)
    plain = xb.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(b(plain)[:, 0].sum(), plain)
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(L.explain(a, xa, composite="zplus").relevance, alone_a)
    torch.testing.assert_close(L.explain(b, xb, composite="epsilon").relevance, alone_b)


def test_two_models_in_two_threads_do_not_interfere():
    g = M.seeded(3)
    models = [M.mlp(6, 8, 3).eval(), M.FunctionalActivationNet().eval()]
    inputs = [torch.randn(16, 6, generator=g), torch.randn(16, 6, generator=g)]
    composites = ["zplus", "epsilon"]
    expected = [L.explain(m, x, composite=c).relevance for m, x, c in zip(models, inputs, composites)]
    results: dict[int, list] = {0: [], 1: []}
    errors = []

    def work(i):
        try:
            for _ in range(20):
                results[i].append(L.explain(models[i], inputs[i], composite=composites[i]).relevance)
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in (0, 1):
        for relevance in results[i]:
            torch.testing.assert_close(relevance, expected[i])


def test_a_scope_cannot_be_entered_twice():
    model = M.mlp()
    scope = L.composites.get("epsilon").context(model)
    with scope:
        with pytest.raises(RuntimeError, match="already active"):
            scope.__enter__()
    assert "forward" not in model[0].__dict__


def test_signature_of_wrapped_forward_is_the_original():
    import inspect

    model = M.mlp()
    with L.composites.get("epsilon").context(model):
        assert list(inspect.signature(model[0].forward).parameters) == ["input"]
