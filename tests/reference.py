"""Independent matrix-form LRP rules in float64, for tests.

Each function takes a dense weight matrix ``W`` (outputs x inputs), a bias vector ``b`` (or
None), one input vector ``x`` and the output relevance ``R``, and returns the input relevance,
written straight from the rule definitions (Montavon et al. 2019; zennit's conventions). Layers
other than Linear are turned into dense matrices by probing them with basis vectors.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def stab(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """z + eps * sign(z), sign(0) = +1."""
    sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
    return z + eps * sign


def pos(t):
    return None if t is None else t.clamp(min=0)


def neg(t):
    return None if t is None else t.clamp(max=0)


def _b(b, like):
    return torch.zeros_like(like) if b is None else b


def epsilon(W, b, x, R, eps=1e-6):
    z = W @ x + _b(b, W[:, 0])
    return x * (W.T @ (R / stab(z, eps)))


def zplus(W, b, x, R):
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    zp = pos(W) @ xp + neg(W) @ xn + pos(_b(b, W[:, 0]))
    s = R / stab(zp)
    return xp * (pos(W).T @ s) + xn * (neg(W).T @ s)


def alphabeta(W, b, x, R, alpha=2.0, beta=1.0):
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    bb = _b(b, W[:, 0])
    zp = pos(W) @ xp + neg(W) @ xn + pos(bb)
    zn = neg(W) @ xp + pos(W) @ xn + neg(bb)
    sp, sn = R / stab(zp), R / stab(zn)
    r_pos = xp * (pos(W).T @ sp) + xn * (neg(W).T @ sp)
    r_neg = xp * (neg(W).T @ sn) + xn * (pos(W).T @ sn)
    return alpha * r_pos - beta * r_neg


def gamma(W, b, x, R, g=0.25):
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    bb = _b(b, W[:, 0])
    z = W @ x + bb
    up, down = W + g * pos(W), W + g * neg(W)
    zp = up @ xp + down @ xn + bb + g * pos(bb)
    zn = down @ xp + up @ xn + bb + g * neg(bb)
    sp = torch.where(z > 0, R, torch.zeros_like(R)) / stab(zp)
    sn = torch.where(z < 0, R, torch.zeros_like(R)) / stab(zn)
    return xp * (up.T @ sp + down.T @ sn) + xn * (down.T @ sp + up.T @ sn)


def zbox(W, b, x, R, low, high):
    low = torch.broadcast_to(torch.as_tensor(low, dtype=x.dtype), x.shape)
    high = torch.broadcast_to(torch.as_tensor(high, dtype=x.dtype), x.shape)
    z = W @ x - pos(W) @ low - neg(W) @ high
    s = R / stab(z)
    return x * (W.T @ s) - low * (pos(W).T @ s) - high * (neg(W).T @ s)


def wsquare(W, b, x, R):
    W2 = W**2
    den = W2.sum(1) + (0 if b is None else b**2)
    return W2.T @ (R / stab(den))


def flat(W_ones, x, R):
    """``W_ones``: the layer's connectivity (1 where an input feeds an output)."""
    return W_ones.T @ (R / stab(W_ones.sum(1)))


def dense_matrix(layer_fn, input_shape) -> torch.Tensor:
    """The matrix M with ``layer_fn(x).flatten() = M @ x.flatten()`` for a bias-free linear map,
    found by applying ``layer_fn`` to every basis vector (``input_shape`` excludes the batch)."""
    n = int(torch.tensor(input_shape).prod())
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *input_shape)
    return layer_fn(basis).reshape(n, -1).T


def layer_as_matrix(layer, input_shape):
    """(W, b) of a Linear/Conv layer as a dense matrix and a bias vector over flattened outputs."""
    weight = layer.weight.detach().double()
    if isinstance(layer, torch.nn.Linear):
        return weight, None if layer.bias is None else layer.bias.detach().double()

    def conv(v, w=weight):
        fn = {1: F.conv1d, 2: F.conv2d}[weight.dim() - 2]
        return fn(v, w, None, layer.stride, layer.padding, layer.dilation, layer.groups)

    W = dense_matrix(conv, input_shape)
    b = None
    if layer.bias is not None:
        out_shape = conv(torch.zeros(1, *input_shape, dtype=torch.float64)).shape[1:]
        b = layer.bias.detach().double().reshape(-1, *([1] * (len(out_shape) - 1))).expand(out_shape).reshape(-1)
    return W, b


def connectivity(layer, input_shape):
    """The 0/1 matrix of which input feeds which output (the Flat rule's weights)."""
    if isinstance(layer, torch.nn.Linear):
        return torch.ones_like(layer.weight.detach().double())
    ones = torch.ones_like(layer.weight.detach().double())
    fn = {1: F.conv1d, 2: F.conv2d}[ones.dim() - 2]
    return dense_matrix(
        lambda v: fn(v, ones, None, layer.stride, layer.padding, layer.dilation, layer.groups), input_shape
    )
