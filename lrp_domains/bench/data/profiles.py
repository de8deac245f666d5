"""A small BPNet-like profile model trained on synthetic profiles over the planted-motif data.

Profiles: every planted motif of :mod:`lrp_domains.bench.data.synthetic` (all kinds by default, or the
``signal_motifs`` given) is a binding site that yields reads in a smooth peak around it, as in a
ChIP-nexus experiment modelled by BPNet (Avsec et al. 2021, *Nature Genetics* 53, 354-366): on the
plus strand a Gaussian peak ``shift`` bases upstream of the motif's centre, on the minus strand
``shift`` bases downstream, each with ``strength / 2`` expected reads, on top of a flat background
of ``background`` expected reads per base and strand. Motif kinds differ in strength
(:func:`motif_strengths`), so the total count carries information about which motifs are present.
Reads are sampled as Poisson counts from the intensity with a seeded ``numpy`` generator.

Model: ``bpnetlite.bpnet.BPNet`` (Schreiber's reference implementation) with few filters and few
dilated residual layers, 200 bp in and out (no trimming), two stranded profile outputs, no control
track. Loss: bpnet-lite's (:func:`bpnetlite.losses._mixture_loss`): multinomial negative log
likelihood of the counts under one softmax over both strands, plus ``count_loss_weight`` times the
MSE between the predicted log counts and ``log(1 + total counts)``. The weight defaults to a tenth
of the median total count of the training set, ChromBPNet's choice, so that the two terms are of
comparable size (bpnet-lite's default 1 leaves the counts head almost untrained at these depths).
The training loop is our own (bpnet-lite's ``fit`` wants CUDA and writes files).

Example::

    from lrp_domains.bench.data.profiles import make_profile_data, train_profile_model
    train = make_profile_data(make_dataset(3000, seed=11))
    model, fit = train_profile_model(train, seed=0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from lrp_domains.bench.data.synthetic import MOTIF_IDS, SyntheticDataset, motif_ppms
from lrp_domains.errors import InputError

__all__ = [
    "ProfileData",
    "ProfileFit",
    "build_profile_model",
    "evaluate_profile_model",
    "make_profile_data",
    "motif_strengths",
    "profile_intensity",
    "signal_truth",
    "train_profile_model",
]


def motif_strengths(base: float = 20.0) -> dict[str, float]:
    """Expected reads per binding site (both strands together) for each motif kind: ``base``,
    ``2 base``, ``3 base`` or ``4 base``, cycling through :data:`MOTIF_IDS` in order."""
    return {motif_id: base * (1 + i % 4) for i, motif_id in enumerate(MOTIF_IDS)}


@dataclass
class ProfileData:
    """Synthetic stranded read profiles over a :class:`SyntheticDataset` (``N`` sequences, ``L`` bases).

    Attributes
    ----------
    data:
        The sequences, labels, planted motifs and ground truth.
    intensity:
        ``(N, 2, L)`` float32: expected reads per base on the plus and minus strand.
    counts:
        ``(N, 2, L)`` float32: Poisson reads sampled from ``intensity``.
    signal_motifs:
        The motif kinds that yield reads.
    """

    data: SyntheticDataset
    intensity: torch.Tensor
    counts: torch.Tensor
    signal_motifs: tuple[str, ...] = field(default_factory=tuple)

    @property
    def onehot(self) -> torch.Tensor:
        """``(N, 4, L)`` one-hot sequences."""
        return self.data.onehot

    @property
    def log_total(self) -> torch.Tensor:
        """``(N, 1)``: ``log(1 + total reads)``, the counts head's target."""
        return torch.log1p(self.counts.sum(dim=(1, 2))).unsqueeze(1)


def profile_intensity(
    data: SyntheticDataset,
    signal_motifs: tuple[str, ...] | list[str] | None = None,
    strengths: dict[str, float] | None = None,
    sigma: float = 4.0,
    shift: float = 3.0,
    background: float = 0.02,
) -> torch.Tensor:
    """Expected reads ``(N, 2, L)``: a Gaussian peak (standard deviation ``sigma`` bases) per planted
    motif of the ``signal_motifs`` kinds (default: all), centred ``shift`` bases upstream of the
    motif's centre on the plus strand and downstream on the minus strand, each strand with half the
    motif's strength (:func:`motif_strengths`), plus ``background`` per base and strand."""
    kinds = tuple(MOTIF_IDS if signal_motifs is None else signal_motifs)
    unknown = [m for m in kinds if m not in MOTIF_IDS]
    if unknown:
        raise InputError(f"unknown signal motifs {unknown}; choose from {MOTIF_IDS}")
    if sigma <= 0 or background < 0:
        raise InputError(f"sigma must be > 0 and background >= 0, got sigma={sigma}, background={background}")
    strengths = motif_strengths() if strengths is None else strengths
    widths = {motif_id: ppm.shape[1] for motif_id, (_, ppm) in motif_ppms().items()}
    n, _, length = data.onehot.shape
    positions = np.arange(length, dtype=np.float64)
    intensity = np.full((n, 2, length), background, dtype=np.float64)
    for i, planted in enumerate(data.placements):
        for site in planted:
            if site.motif_id not in kinds:
                continue
            centre = site.start + (widths[site.motif_id] - 1) / 2
            half = strengths[site.motif_id] / 2
            for strand, offset in ((0, -shift), (1, shift)):
                peak = np.exp(-0.5 * ((positions - centre - offset) / sigma) ** 2)
                intensity[i, strand] += half * peak / peak.sum()
    return torch.from_numpy(intensity.astype(np.float32))


def make_profile_data(
    data: SyntheticDataset,
    signal_motifs: tuple[str, ...] | list[str] | None = None,
    seed: int = 0,
    **intensity_options: float,
) -> ProfileData:
    """Stranded read profiles for ``data``: :func:`profile_intensity` sampled as Poisson counts with
    ``numpy.random.default_rng(seed)`` (the same arguments give the same counts)."""
    intensity = profile_intensity(data, signal_motifs, **intensity_options)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(intensity.double().numpy()).astype(np.float32)
    kinds = tuple(MOTIF_IDS if signal_motifs is None else signal_motifs)
    return ProfileData(data=data, intensity=intensity, counts=torch.from_numpy(counts), signal_motifs=kinds)


def signal_truth(profiles: ProfileData) -> torch.Tensor:
    """``(N, L)`` bool ground truth for the profile model: the informative positions
    (``data.truth``) of planted motifs whose kind yields reads."""
    truth = torch.zeros_like(profiles.data.truth)
    widths = {motif_id: ppm.shape[1] for motif_id, (_, ppm) in motif_ppms().items()}
    for i, planted in enumerate(profiles.data.placements):
        for site in planted:
            if site.motif_id in profiles.signal_motifs:
                end = site.start + widths[site.motif_id]
                truth[i, site.start : end] = profiles.data.truth[i, site.start : end]
    return truth


def build_profile_model(n_filters: int = 32, n_layers: int = 4) -> torch.nn.Module:
    """A bpnet-lite ``BPNet``: ``n_filters`` filters, ``n_layers`` dilated residual layers
    (dilations 2, 4, ...), two stranded outputs, no control track, no trimming (output length =
    input length)."""
    from bpnetlite.bpnet import BPNet

    return BPNet(n_filters=n_filters, n_layers=n_layers, n_outputs=2, n_control_tracks=0, trimming=0, verbose=False)


def _losses(
    model: torch.nn.Module, onehot: torch.Tensor, counts: torch.Tensor, weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """bpnet-lite's loss: (profile MNLL, log-count MSE, MNLL + weight * MSE), batch means."""
    from bpnetlite.losses import _mixture_loss

    profile, log_counts = model(onehot)
    return _mixture_loss(counts, profile, log_counts, weight)


@dataclass
class ProfileFit:
    """How well a profile model fits held-out profiles (see :func:`evaluate_profile_model`)."""

    profile_mnll: float
    profile_pearson: float
    profile_pearson_intensity: float
    counts_pearson: float
    counts_mse: float
    n: int

    def as_dict(self) -> dict[str, float]:
        """The fields as a plain dict."""
        return dict(self.__dict__)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last axis."""
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-30)


@torch.no_grad()
def evaluate_profile_model(model: torch.nn.Module, profiles: ProfileData, batch_size: int = 256) -> ProfileFit:
    """Held-out fit: mean profile MNLL (all sequences); mean per-sequence Pearson correlation of the
    predicted profile (softmax over both strands) with the observed reads and with the generating
    intensity (positive sequences: negatives have a flat profile); Pearson correlation and MSE of the
    predicted log counts with ``log(1 + total reads)`` (all sequences). The model is left in the
    training mode it came in."""
    was_training = model.training
    model.eval()
    try:
        profile, log_counts = [], []
        for start in range(0, len(profiles.counts), batch_size):
            p, c = model(profiles.onehot[start : start + batch_size])
            profile.append(p)
            log_counts.append(c)
        logits = torch.cat(profile).reshape(len(profiles.counts), -1)
        log_counts_hat = torch.cat(log_counts).reshape(-1)
    finally:
        model.train(was_training)
    from bpnetlite.losses import MNLLLoss

    logp = torch.log_softmax(logits, dim=-1)
    observed = profiles.counts.reshape(len(profiles.counts), -1)
    positive = profiles.data.labels == 1
    prob = logp.exp()
    truth = profiles.log_total.reshape(-1)
    return ProfileFit(
        profile_mnll=float(MNLLLoss(logp, observed).mean()),
        profile_pearson=float(_pearson(prob[positive], observed[positive]).mean()),
        profile_pearson_intensity=float(
            _pearson(prob[positive], profiles.intensity.reshape(len(observed), -1)[positive]).mean()
        ),
        counts_pearson=float(_pearson(log_counts_hat, truth)),
        counts_mse=float(((log_counts_hat.double() - truth.double()) ** 2).mean()),
        n=len(observed),
    )


def train_profile_model(
    profiles: ProfileData,
    seed: int = 0,
    n_filters: int = 32,
    n_layers: int = 4,
    epochs: int = 12,
    batch_size: int = 64,
    lr: float = 4e-3,
    count_loss_weight: float | None = None,
    validation: ProfileData | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train :func:`build_profile_model` on ``profiles`` with bpnet-lite's loss (see the module
    docstring), Adam, ``epochs`` passes in seeded shuffled batches; returns the model in eval mode
    and a dict with the training settings, the final training loss and, with ``validation``, the
    :class:`ProfileFit` on it (under ``"fit"``). Keeps the weights of the epoch with the lowest
    validation loss when ``validation`` is given."""
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise InputError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    if len(profiles.counts) < 2:
        raise InputError("train_profile_model needs at least 2 sequences")
    totals = profiles.counts.sum(dim=(1, 2))
    weight = float(totals.median()) / 10 if count_loss_weight is None else float(count_loss_weight)
    torch.manual_seed(seed)
    model = build_profile_model(n_filters, n_layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    best, best_loss, loss_value = None, math.inf, math.nan
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(profiles.counts), generator=generator)
        for start in range(0, len(order), batch_size):
            take = order[start : start + batch_size]
            optimizer.zero_grad()
            _, _, loss = _losses(model, profiles.onehot[take], profiles.counts[take], weight)
            loss.backward()
            optimizer.step()
            loss_value = float(loss.detach())
        if validation is not None:
            model.eval()
            with torch.no_grad():
                _, _, valid_loss = _losses(model, validation.onehot, validation.counts, weight)
            if float(valid_loss) < best_loss:
                best_loss = float(valid_loss)
                best = {name: value.detach().clone() for name, value in model.state_dict().items()}
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    info: dict = {
        "n_filters": n_filters,
        "n_layers": n_layers,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "count_loss_weight": weight,
        "seed": seed,
        "train_sequences": len(profiles.counts),
        "final_train_loss": loss_value,
    }
    if validation is not None:
        info["fit"] = evaluate_profile_model(model, validation).as_dict()
    return model, info
