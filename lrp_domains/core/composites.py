"""Named composites: ``get(name, **kwargs)`` and ``names()``.

Adapters register their own (the text adapter adds ``attnlrp`` and ``cp-lrp``) with
:func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lrp_domains.core.composite import Composite
from lrp_domains.core.rules import AlphaBeta, Epsilon, Gamma, ZBox, ZPlus

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
DENSE = nn.Linear

_REGISTRY: dict[str, Callable[..., Composite]] = {}


def register(name: str, factory: Callable[..., Composite]) -> None:
    """Make ``get(name, **kwargs)`` return ``factory(**kwargs)``."""
    _REGISTRY[name] = factory


def names() -> list[str]:
    """The names :func:`get` accepts."""
    return sorted(_REGISTRY)


def get(name: str, **kwargs: object) -> Composite:
    """The named composite, configured with ``kwargs`` (e.g. ``low``/``high`` for z-box)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        hint = " (import lrp_domains.text to use the transformer composites)" if name in ("attnlrp", "cp-lrp") else ""
        raise ValueError(f"unknown composite {name!r}{hint}; choose one of {', '.join(names())}") from None
    return factory(**kwargs)


def epsilon(epsilon: float = 1e-6) -> Composite:
    """LRP-epsilon on every dense and conv layer."""
    return Composite({(DENSE,) + CONV: Epsilon(epsilon)}, name="epsilon")


def zplus(stabilizer: float = 1e-6) -> Composite:
    """LRP-z+ on every dense and conv layer."""
    return Composite({(DENSE,) + CONV: ZPlus(stabilizer)}, name="zplus")


def alpha2beta1(stabilizer: float = 1e-6) -> Composite:
    """LRP-alpha2-beta1 on every dense and conv layer."""
    # Conserves only where both parts of a neuron are non-zero (Bach et al. 2015): no warning.
    return Composite({(DENSE,) + CONV: AlphaBeta(2.0, 1.0, stabilizer)}, name="alpha2beta1", conserves=False)


def epsilon_plus(epsilon: float = 1e-6) -> Composite:
    """z+ on conv layers, epsilon on dense layers (zennit's ``EpsilonPlus``)."""
    return Composite({CONV: ZPlus(), DENSE: Epsilon(epsilon)}, name="epsilon-plus")


def epsilon_gamma_box(
    low: float | None = None, high: float | None = None, gamma: float = 0.25, epsilon: float = 1e-6
) -> Composite:
    """z-box on the input layer, gamma on conv, epsilon on dense (Montavon et al. 2019, Sec. 10.1;
    zennit's ``EpsilonGammaBox``). ``low``/``high`` bound the input: 0 and 1 for one-hot data."""
    if low is None or high is None:
        raise ValueError(
            "epsilon-gamma-box needs the input bounds: pass low= and high= (e.g. low=0, high=1 for one-hot "
            "sequences, or the per-channel min/max of normalised images)"
        )
    return Composite({CONV: Gamma(gamma), DENSE: Epsilon(epsilon)}, first=ZBox(low, high), name="epsilon-gamma-box")


def epsilon_gamma(gamma: float = 0.25, epsilon: float = 1e-6) -> Composite:
    """Gamma on every dense and conv layer but the last, epsilon on the last (the output layer):
    gamma favours positive contributions in the hidden layers (Montavon et al. 2019, Sec. 10.1)."""
    return Composite({(DENSE,) + CONV: Gamma(gamma)}, last=Epsilon(epsilon), name="epsilon-gamma")


register("epsilon", epsilon)
register("epsilon-gamma", epsilon_gamma)
register("zplus", zplus)
register("alpha2beta1", alpha2beta1)
register("epsilon-plus", epsilon_plus)
register("epsilon-gamma-box", epsilon_gamma_box)
