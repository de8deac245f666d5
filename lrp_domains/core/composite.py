"""Composites: which rule each layer of a model gets."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lrp_domains.core.canonizers import MergeBatchNorm
from lrp_domains.core.rules import Epsilon, Identity, Pass, Rule

if TYPE_CHECKING:
    from lrp_domains.core.engine.scope import Scope

#: A rule key: a module type, a tuple of types, a module name, or a predicate ``module -> bool``.
LayerKey = Union[type, tuple, str, Callable[[nn.Module], bool]]

#: Rules every composite starts from; a composite's own rules take precedence.
BASE_RULES: dict[LayerKey, Rule] = {
    (nn.ReLU, nn.LeakyReLU): Pass(),
    (nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.Tanh, nn.Softplus, nn.Mish, nn.Hardswish): Identity(),
    (
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.MaxPool3d,
        nn.AdaptiveMaxPool1d,
        nn.AdaptiveMaxPool2d,
        nn.AdaptiveMaxPool3d,
    ): Pass(),
    (
        nn.AvgPool1d,
        nn.AvgPool2d,
        nn.AvgPool3d,
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveAvgPool3d,
    ): Epsilon(),
    (
        nn.Dropout,
        nn.Dropout1d,
        nn.Dropout2d,
        nn.Dropout3d,
        nn.AlphaDropout,
        nn.Flatten,
        nn.Unflatten,
        nn.Identity,
    ): Pass(),
    # A BatchNorm not merged into a layer is a diagonal affine layer: epsilon.
    _BatchNorm: Epsilon(),
}

#: A functional rule: ``handler(func, args, kwargs) -> output`` for one torch function.
FunctionalRule = Callable[[Callable, tuple, dict], Any]


class Composite:
    """Maps layers to rules.

    Parameters
    ----------
    rules:
        ``{layer type | tuple of types | module name | predicate: Rule}``. Names (as in
        ``model.named_modules()``) win over types and predicates, which are tried in the order
        given (types with ``isinstance``, predicates called with the module). :data:`BASE_RULES`
        (activations, pooling, dropout, reshapes) fill in the rest.
    first:
        Rule for the first affine layer that sees the input (z-box, flat, w-square).
    last:
        Rule for the model's last affine layer (the last Linear/Conv in module order: the output
        layer of a feed-forward network), e.g. epsilon after gamma layers.
    canonizers:
        Applied for the duration of an explanation; default: merge BatchNorm into the layer before.
    functional:
        Rules for torch functions called directly inside ``forward`` (``torch.softmax``...), by
        function name; extends the built-in table of :mod:`lrp_domains.core.functional`.
    name:
        Shown in reports and reprs.
    conserves:
        Whether the rules conserve relevance up to biases and stabilizers; ``explain`` then warns
        when an example's ``delta`` is large.
    """

    def __init__(
        self,
        rules: Mapping[LayerKey, Rule] | None = None,
        first: Rule | None = None,
        canonizers: Sequence[Any] | None = None,
        last: Rule | None = None,
        functional: Mapping[str, FunctionalRule] | None = None,
        name: str = "custom",
        conserves: bool = True,
    ) -> None:
        self.rules = dict(rules or {})
        for key, rule in self.rules.items():
            if not isinstance(rule, Rule):
                raise TypeError(f"the rule for {key!r} must be a lrp_domains.rules.Rule, got {rule!r}")
        for label, value in (("first", first), ("last", last)):
            if value is not None and not isinstance(value, Rule):
                raise TypeError(f"{label} must be a Rule or None, got {value!r}")
        self.first = first
        self.last = last
        self.canonizers = list((MergeBatchNorm(),) if canonizers is None else canonizers)
        self.functional = dict(functional or {})
        self.name = name
        self.conserves = conserves

    def __repr__(self) -> str:
        return f"Composite(name={self.name!r}, rules={self.rules!r}, first={self.first!r}, last={self.last!r})"

    def rule_for(self, name: str, module: nn.Module) -> Rule | None:
        """The rule for ``module`` (called ``name`` in its model), or None when it has none."""
        if name in self.rules:
            return self.rules[name]
        for table in (self.rules, BASE_RULES):
            for key, rule in table.items():
                if isinstance(key, str):
                    continue
                if isinstance(key, (type, tuple)):
                    if isinstance(module, key):
                        return rule
                elif key(module):
                    return rule
        return None

    def context(self, model: nn.Module) -> Scope:
        """Apply this composite to ``model`` inside a ``with`` block (see :class:`Scope`)."""
        from lrp_domains.core.engine.scope import Scope

        return Scope(model, self)
