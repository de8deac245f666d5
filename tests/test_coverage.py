"""Every operation gets a rule or is named: functional calls, shared modules, strict mode."""

import models as M
import pytest
import torch
from torch import nn

import lrp_domains as L
from lrp_domains import rules as R


def test_functional_activations_get_the_same_rules_as_modules():
    g = M.seeded(0)
    functional = M.FunctionalActivationNet().eval()
    modules = M.ModuleActivationNet(functional).eval()
    x = torch.randn(5, 6, generator=g)
    for name in ("epsilon", "zplus"):
        a = L.explain(functional, x, composite=name, strict=True)
        b = L.explain(modules, x, composite=name, strict=True)
        torch.testing.assert_close(a.relevance, b.relevance)


def test_identity_rule_differs_from_the_gradient_for_gelu():
    g = M.seeded(1)
    modules = M.ModuleActivationNet(M.FunctionalActivationNet()).eval()
    x = torch.randn(5, 6, generator=g)
    ours = L.explain(modules, x, composite="epsilon").relevance
    leaf = x.clone().requires_grad_(True)
    out = modules(leaf)
    (grad,) = torch.autograd.grad(out.gather(1, out.argmax(1, keepdim=True)).sum(), leaf)
    assert not torch.allclose(ours, x * grad, atol=1e-4)


def test_a_module_called_twice_gets_its_rule_both_times():
    g = M.seeded(2)
    shared = M.SharedLayerNet().eval()
    unshared = M.UnsharedLayerNet(shared).eval()
    x = torch.randn(6, 6, generator=g)
    torch.testing.assert_close(shared(x), unshared(x))
    for name in ("epsilon", "zplus", "alpha2beta1"):
        a = L.explain(shared, x, composite=name, strict=True)
        b = L.explain(unshared, x, composite=name, strict=True)
        torch.testing.assert_close(a.relevance, b.relevance)


def test_uniform_rule_on_products_of_two_input_dependent_tensors():
    """(W1 x) * (W2 x): the plain gradient gives each factor the product's whole relevance
    (double counting); the uniform rule gives each half, so relevance is conserved."""

    class Bilinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3, bias=False)
            self.b = nn.Linear(4, 3, bias=False)

        def forward(self, x):
            return (self.a(x) * self.b(x)).sum(-1, keepdim=True)

    M.seeded(3)
    model = Bilinear().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    result = L.explain(model, x, target=0, composite=L.Composite({nn.Linear: R.Epsilon(1e-12)}), strict=True)
    torch.testing.assert_close(result.relevance.sum(1), result.explained)
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(leaf).sum(), leaf)
    torch.testing.assert_close((x * grad).sum(1), 2 * result.explained)


def test_strict_mode_names_each_uncovered_operation():
    M.seeded(4)
    model = M.UncoveredNet()
    with pytest.raises(L.LRPCoverageError) as info:
        L.explain(model, torch.randn(3, 6), strict=True)
    message = str(info.value)
    assert "layer_norm in 'norm' (LayerNorm)" in message
    assert "sigmoid in '<model>' (UncoveredNet)" in message
    # its output softmax is off the explained path: the logits are explained (tests/test_nonfinite.py)
    assert "softmax" not in message
    assert "forward" not in model.norm.__dict__


def test_without_strict_the_same_list_is_a_warning():
    M.seeded(5)
    model = M.UncoveredNet()
    with pytest.warns(UserWarning, match="no LRP rule covers: .*layer_norm.*sigmoid"):
        result = L.explain(model, torch.randn(3, 6), batch_size=1)
    assert result.relevance.shape == (3, 6)


def test_giving_the_uncovered_parts_rules_satisfies_strict_mode():
    from lrp_domains.core.functional import pass_handler

    M.seeded(6)
    model = M.UncoveredNet()
    composite = L.Composite(
        {nn.Linear: R.Epsilon(), nn.LayerNorm: R.Pass(), nn.Softmax: R.Stop()},
        functional={"sigmoid": pass_handler},
    )
    result = L.explain(model, torch.randn(3, 6), target=lambda out: out[:, 0], composite=composite, strict=True)
    assert torch.count_nonzero(result.relevance) == 0  # the softmax stops all relevance


def test_layer_rule_on_a_module_without_weights_is_a_clear_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.AvgPool1d(1), nn.Flatten())
    with pytest.raises(TypeError, match="needs an affine layer"):
        L.explain(model, torch.randn(2, 1, 4), composite=L.Composite({nn.AvgPool1d: R.ZPlus()}))


def test_first_rule_applies_to_the_first_layer_only():
    g = M.seeded(7)
    model = M.mlp(10, 16, 3).eval()
    x = torch.rand(4, 10, generator=g)
    with_first = L.explain(model, x, composite=L.Composite({nn.Linear: R.Epsilon()}, first=R.Flat()))
    with_flat_everywhere_but_first_epsilon = L.explain(model, x, composite=L.Composite({nn.Linear: R.Epsilon()}))
    assert not torch.allclose(with_first.relevance, with_flat_everywhere_but_first_epsilon.relevance)
    # Flat ignores input values: two inputs with the same upstream relevance get the same map.
    upper = L.explain(model[1:], model[0](x).detach(), target=with_first.target, composite="epsilon")
    expected = upper.relevance.sum(1, keepdim=True) / 10
    torch.testing.assert_close(with_first.relevance, expected.expand(-1, 10), rtol=1e-5, atol=1e-6)


def test_input_layer_rule_deeper_in_the_network_warns():
    g = M.seeded(8)
    model = M.mlp(10, 16, 3).eval()
    with pytest.warns(UserWarning, match="does not see a tracked model input"):
        L.explain(model, torch.rand(4, 10, generator=g), composite=L.Composite({"2": R.WSquare()}))


def test_last_rule_applies_to_the_output_layer_only():
    g = M.seeded(9)
    model = M.mlp(10, 16, 3).eval()
    x = torch.randn(4, 10, generator=g)
    ours = L.explain(model, x, composite="epsilon-gamma").relevance
    by_hand = L.Composite({"0": R.Gamma(0.25), "2": R.Gamma(0.25), "4": R.Epsilon(1e-6)})
    torch.testing.assert_close(ours, L.explain(model, x, composite=by_hand).relevance)
    gamma_everywhere = L.Composite({nn.Linear: R.Gamma(0.25)})
    assert not torch.allclose(ours, L.explain(model, x, composite=gamma_everywhere).relevance)
