"""The stabilizer shared by every LRP rule."""

from __future__ import annotations

import torch


def stabilize(z: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
    """Return ``z + epsilon * sign(z)`` with ``sign(0) = +1``.

    This is the denominator stabilizer of the LRP-epsilon rule (Bach et al. 2015, PLoS ONE,
    Eq. 58; Montavon et al. 2019, "Layer-wise relevance propagation: an overview", Eq. 4). Zero
    counts as positive so that a zero denominator never stays zero.
    """
    stabilized = z.abs().add_(epsilon).copysign_(z)
    # copysign makes -0.0 negative; the rule counts every zero as positive.
    return stabilized.masked_fill_(z == 0, epsilon)


def stabilize_signed(z: torch.Tensor, sign: float, epsilon: float = 1e-6) -> torch.Tensor:
    """:func:`stabilize` for a tensor known to be ``>= 0`` (``sign=1``) or ``<= 0`` (``sign=-1``).

    One pass instead of five. For ``sign=-1`` an exact zero becomes ``-epsilon``; callers use it
    only where a zero denominator meets a zero numerator or a zero input, so the result is the same.
    """
    return z + epsilon if sign > 0 else z - epsilon


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` where the denominator is non-zero, and 0 where it is zero."""
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(numerator), numerator / denominator.masked_fill(zero, 1))
