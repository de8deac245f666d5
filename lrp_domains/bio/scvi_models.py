"""Gene relevance for scvi-tools models: scANVI's cell-type prediction and its latent space, counts in.

scANVI (Xu et al. 2021) encodes a cell's raw counts ``x`` as ``z = mean(q(z|x))`` and classifies
``z``. Its own path (``SCANVAE.classify`` with ``use_posterior_mean=True``) is::

    log1p(x) -> z_encoder.encoder (FCLayers: Linear, BatchNorm, ReLU, Dropout) -> z_encoder.mean_encoder
             -> classifier (FCLayers, Linear) -> logits

:func:`scanvi_classifier` and :func:`latent_module` wrap exactly those submodules of a trained
``scvi.model.SCANVI`` (shared, not copied, no sampling: the variance head and ``rsample`` are
never called) in a plain ``nn.Module`` that maps counts ``(cells, genes)`` to logits, to latent
coordinates, or to minus the squared distance to a centroid. Hand the classifier to
:class:`~lrp_domains.bio.expression.ExpressionExplainer`, with :func:`scanvi_composite` for the
rules (see :func:`explainer`), and the rankings, marker and DE comparisons and ``to_anndata``
work unchanged. Relevance is per gene, on the counts.

Rules for what the encoder does:

- ``log1p``: elementwise and monotone, the identity rule ``R_in = R_out`` (as for GELU in
  AttnLRP, Achtibat et al. 2024, Sec. 3.3.1); added to ``IDENTITY_RULE_OPS`` in
  :mod:`lrp_domains.core.functional`. A gene with 0 counts gets 0 relevance.
- BatchNorm1d (eval): merged into the Linear before it (the composites' default canonizer).
- LayerNorm (``use_layer_norm``): the standard deviation treated as a constant
  (:class:`ConstantStdNorm`; CP-LRP, Ali et al. 2022, Sec. 3.2).
- Dropout: off (eval mode), the gradient passes.
- Library-size normalisation ``x / sum(x)``: scANVI's *encoder* does not use it (the observed
  library size enters only the decoder, which neither the logits nor ``z`` use), so the adapter
  has none. For wrappers that do normalise, :func:`constant_denominator_handler` (in
  :func:`scanvi_composite`) treats an input-dependent denominator as a constant, as CP-LRP does
  for LayerNorm's standard deviation (Ali et al. 2022): ``x_i / s`` is then linear in ``x_i``
  and passes relevance unchanged.

Counts: ``scanpy.datasets.pbmc68k_reduced()`` has no raw counts. Its ``.raw.X`` is
``log1p(counts / n_counts * 1e4)`` (scanpy's ``normalize_per_cell`` to 10,000 then ``log1p``,
rounded to 3 decimals) over the same 765 genes, and ``obs["n_counts"]`` holds each cell's total
count over all genes, so :func:`pbmc_counts` recovers the counts as
``round(expm1(raw.X) * n_counts / 1e4)`` (the largest distance to the nearest integer before
rounding is 0.08 of a count, from the 3-decimal rounding). Only the 765 stored genes are counts;
the genes the data set dropped are absent, so library sizes are those of the 765 genes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lrp_domains.core.composite import Composite
from lrp_domains.core.functional import DIVISION_OPS
from lrp_domains.core.rules import Rule, single_input
from lrp_domains.core.scope import ModuleCall, covered
from lrp_domains.errors import InputError

if TYPE_CHECKING:
    import anndata

    from lrp_domains.bio.expression import ExpressionExplainer

__all__ = [
    "ConstantStdNorm", "ScanviClassifier", "ScanviLatent", "classes_of", "constant_denominator_handler",
    "explainer", "genes_of", "latent_module", "load_or_train", "pbmc_counts", "scanvi_classifier",
    "scanvi_composite", "train_scanvi",
]

UNLABELED = "Unknown"


# -- data --------------------------------------------------------------------------------------------
def pbmc_counts(adata: anndata.AnnData | None = None) -> anndata.AnnData:
    """Counts for ``pbmc68k_reduced``: ``round(expm1(raw.X) * n_counts / 1e4)`` (module docstring).

    Returns an AnnData with those counts in ``X`` (float32) and in ``layers["counts"]``, the 765
    genes and the ``obs`` of ``adata`` (default: ``scanpy.datasets.pbmc68k_reduced()``, offline).
    """
    import anndata as ad

    if adata is None:
        import scanpy as sc

        adata = sc.datasets.pbmc68k_reduced()
    if adata.raw is None or "n_counts" not in adata.obs:
        raise InputError("pbmc_counts needs pbmc68k_reduced-style data: log1p-normalised .raw and obs['n_counts']")
    raw = adata.raw.X
    raw = raw.toarray() if hasattr(raw, "toarray") else np.asarray(raw)
    counts = np.round(np.expm1(raw.astype(np.float64)) * adata.obs["n_counts"].to_numpy()[:, None] / 1e4)
    counts = counts.astype(np.float32)
    out = ad.AnnData(counts, obs=adata.obs.copy(), var=adata.raw.var.copy())
    out.layers["counts"] = counts.copy()
    return out


# -- training ----------------------------------------------------------------------------------------
def train_scanvi(adata: anndata.AnnData, labels_key: str = "bulk_labels", held_out: Sequence[str] = (),
                 n_latent: int = 10, n_hidden: int = 64, n_layers: int = 1, max_epochs: int = 100,
                 seed: int = 0, batch_size: int = 128) -> Any:
    """Train a small ``scvi.model.SCANVI`` on the counts in ``adata.X`` (CPU, seeded).

    The cells named in ``held_out`` are given the unlabeled category (``"Unknown"``), so scANVI
    never sees their labels; the rest are labelled with ``obs[labels_key]``. Trained directly
    (no scVI pre-training) for ``max_epochs`` epochs; progress bars and logs are silenced.
    Returns the trained model (in eval mode).
    """
    import scvi

    _check_counts(_dense(adata.X), "adata.X")
    if labels_key not in adata.obs:
        raise InputError(f"no column {labels_key!r} in adata.obs; it has {list(adata.obs.columns)}")
    data = _labelled(adata, labels_key, held_out)
    scvi.settings.seed = seed
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        scvi.model.SCANVI.setup_anndata(data, labels_key="_scanvi_labels", unlabeled_category=UNLABELED)
        model = scvi.model.SCANVI(data, n_latent=n_latent, n_hidden=n_hidden, n_layers=n_layers)
        model.train(max_epochs=max_epochs, accelerator="cpu", devices=1, batch_size=batch_size,
                    enable_progress_bar=False, logger=False, enable_checkpointing=False,
                    enable_model_summary=False, check_val_every_n_epoch=None)
    model.module.eval()
    return model


def _labelled(adata: anndata.AnnData, labels_key: str, held_out: Sequence[str]) -> anndata.AnnData:
    """A copy of ``adata`` with scANVI's label column (held-out cells unlabelled)."""
    data = adata.copy()
    labels = data.obs[labels_key].astype(str).to_numpy().copy()
    labels[np.isin(data.obs_names.astype(str), list(held_out))] = UNLABELED
    data.obs["_scanvi_labels"] = labels
    return data


def load_or_train(cache_dir: str | Path, adata: anndata.AnnData, **train: Any) -> Any:
    """The scANVI model cached under ``cache_dir``, or one trained with :func:`train_scanvi`
    (``train`` keywords) and cached there.

    The cache is the module's weights as ``weights.safetensors`` and the training keywords and
    label order as ``settings.json``; loading builds a fresh, untrained scANVI of those settings on
    ``adata`` (which holds the counts) and loads the weights into it. scvi-tools' own
    ``save``/``load`` are not used: its ``load`` unpickles (``torch.load(weights_only=False)``),
    and a cache folder is a file anyone could have written.
    """
    import json

    from safetensors.torch import load_file, save_file

    path = Path(cache_dir)
    weights, settings = path / "weights.safetensors", path / "settings.json"
    labels_key = train.get("labels_key", "bulk_labels")
    held_out = [str(name) for name in train.get("held_out", ())]
    wanted = {"train": {k: (list(map(str, v)) if k == "held_out" else v) for k, v in train.items()},
              "genes": [str(g) for g in adata.var_names]}
    if weights.is_file() and settings.is_file():
        saved = json.loads(settings.read_text(encoding="utf-8"))
        if saved.get("train") == wanted["train"] and saved.get("genes") == wanted["genes"]:
            import scvi

            data = _labelled(adata, labels_key, held_out)
            sizes = {k: train[k] for k in ("n_latent", "n_hidden", "n_layers") if k in train}
            with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
                    contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                scvi.model.SCANVI.setup_anndata(data, labels_key="_scanvi_labels", unlabeled_category=UNLABELED)
                model = scvi.model.SCANVI(data, **sizes)
            if classes_of(model) == saved.get("classes"):
                model.module.load_state_dict(load_file(str(weights)))
                model.is_trained_ = True
                model.module.eval()
                return model
    model = train_scanvi(adata, **train)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
    save_file(state, str(weights))
    settings.write_text(json.dumps({**wanted, "classes": classes_of(model)}), encoding="utf-8")
    return model


def genes_of(model: Any) -> list[str]:
    """The genes a trained scvi-tools model reads, in its order."""
    return [str(g) for g in model.adata.var_names]


def classes_of(model: Any) -> list[str]:
    """scANVI's output classes in logit order (the label mapping without the unlabeled category)."""
    return [str(c) for c in list(model._label_mapping)[: model.module.n_labels]]


# -- rules -------------------------------------------------------------------------------------------
class ConstantStdNorm(Rule):
    """LayerNorm with its standard deviation treated as a constant (CP-LRP, Ali et al. 2022,
    Sec. 3.2; as for LayerNorm in AttnLRP): ``y = (x - mean(x)) / std(x)`` with ``std`` detached,
    so the norm is linear in ``x`` and the centring (a linear map) keeps its gradient."""

    def __call__(self, call: ModuleCall, args: tuple, kwargs: dict) -> Any:  # noqa: D102
        module = call.module
        x = single_input(call, args, kwargs)
        with covered():
            dims = tuple(range(-len(module.normalized_shape), 0))
            centred = x - x.mean(dims, keepdim=True)
            std = (x.var(dims, keepdim=True, unbiased=False) + module.eps).sqrt().detach()
            y = centred / std
            if module.weight is not None:
                y = y * module.weight
            if module.bias is not None:
                y = y + module.bias
        return y


def constant_denominator_handler(func: Callable, args: tuple, kwargs: dict) -> Any:
    """Division ``a / b`` with an input-dependent ``b`` (library-size normalisation ``x / sum(x)``)
    computed with ``b`` detached: the denominator is a constant for relevance, as CP-LRP treats
    LayerNorm's standard deviation (Ali et al. 2022), so ``a / b`` is linear in ``a`` and passes
    its relevance unchanged (``R_a = a * g / b = R_out``)."""
    if len(args) > 1 and isinstance(args[1], torch.Tensor) and args[1].requires_grad:
        args = (args[0], args[1].detach(), *args[2:])
    return func(*args, **kwargs)


def scanvi_composite(composite: str | Composite = "epsilon") -> Composite:
    """``composite`` (a name or a Composite) with the rules an scvi-tools encoder needs added:
    :class:`ConstantStdNorm` for ``nn.LayerNorm`` and :func:`constant_denominator_handler` for
    divisions by input-dependent tensors. Its other rules, canonizers and name are kept."""
    from lrp_domains.core.attribution import resolve_composite

    base = resolve_composite(composite)
    rules = {nn.LayerNorm: ConstantStdNorm(), **base.rules}
    functional = {**{name: constant_denominator_handler for name in DIVISION_OPS}, **base.functional}
    return Composite(rules, first=base.first, canonizers=base.canonizers, last=base.last, functional=functional,
                     name=base.name, conserves=base.conserves)


# -- modules -----------------------------------------------------------------------------------------
def _dense(matrix: Any) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)


def _check_counts(values: np.ndarray | torch.Tensor, what: str = "counts") -> None:
    """Counts must be finite and >= 0 (scvi-tools models read raw counts)."""
    if isinstance(values, torch.Tensor):
        values = values.detach()
        if bool(torch.isfinite(values).all()) and not bool((values < 0).any()):
            return
        values = values.cpu().numpy()
    array = np.asarray(values)
    if not np.isfinite(array).all():
        raise InputError(f"{what} contain NaN or infinite values; scANVI reads raw counts (finite, >= 0)")
    if (array < 0).any():
        rows = np.unique(np.nonzero(array < 0)[0])
        raise InputError(f"{what} contain negative values (in {len(rows)} cells, e.g. row {int(rows[0])}); scANVI "
                         "reads raw counts, not log-normalised or scaled values: pass adata.layers['counts'] or "
                         "the raw count matrix")


class _Encoder(nn.Module):
    """Counts -> ``mean(q(z|x))`` through an scvi-tools module's own ``z_encoder`` (shared)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        for name in ("z_encoder", "log_variational"):
            if not hasattr(module, name):
                raise InputError(f"expected a trained scvi-tools model (scvi.model.SCANVI), its module has no {name}")
        if getattr(module, "encode_covariates", False) or getattr(module, "n_continuous_cov", 0):
            raise InputError("this scvi-tools model encodes covariates (encode_covariates=True); the adapter "
                             "supports models whose encoder reads the counts only (the default)")
        if getattr(module, "latent_distribution", "normal") != "normal":
            raise InputError("the adapter supports latent_distribution='normal' (the default) only")
        self.log_variational = bool(module.log_variational)
        self.encoder = module.z_encoder.encoder
        self.mean = module.z_encoder.mean_encoder
        self.n_input = int(module.n_input)

    def latent(self, counts: torch.Tensor) -> torch.Tensor:
        """``z = mean(q(z | counts))`` as scANVI computes it (no sampling)."""
        if counts.dim() != 2 or counts.shape[1] != self.n_input:
            raise InputError(f"expected counts of shape (cells, {self.n_input}) in the model's gene order, "
                             f"got {tuple(counts.shape)}")
        _check_counts(counts)
        x = torch.log1p(counts) if self.log_variational else counts
        # FCLayers.forward with no covariates: the encoder's layers in order, Nones skipped.
        return self.mean(self.encoder(x))


class ScanviClassifier(_Encoder):
    """Counts ``(cells, genes)`` -> scANVI's class logits (``SCANVAE.classify``, posterior mean)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module)
        if getattr(module, "use_labels_groups", False):
            raise InputError("scANVI with labels groups is not supported (its classifier divides by a sum)")
        self.classifier = module.classifier
        if not getattr(module.classifier, "logits", True):
            raise InputError("the classifier returns probabilities (logits=False); the adapter needs logits")

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.classifier(self.latent(counts))


class _CentredHead(nn.Linear):
    """The mean head with the centroid folded into its bias: ``d = W h + (b - c) = z - c``.

    The weight is the mean head's own (shared); the bias is computed from the head's bias at each
    call, so a composite's Linear rule (epsilon, gamma...) treats the shift like any bias.
    """

    def __init__(self, mean: nn.Linear, centroid: torch.Tensor) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = mean.in_features, mean.out_features
        self.weight = mean.weight
        self.mean_bias = mean.bias
        self.register_buffer("shift", centroid, persistent=False)

    @property
    def bias(self) -> torch.Tensor:  # type: ignore[override]
        """``b - c``."""
        return -self.shift if self.mean_bias is None else self.mean_bias - self.shift


class ScanviLatent(_Encoder):
    """Counts -> latent coordinates, one latent dimension, or ``-||z - c||^2`` (see :func:`latent_module`)."""

    def __init__(self, module: nn.Module, dim: int | None = None, centroid: Any = None) -> None:
        super().__init__(module)
        n_latent = self.mean.out_features
        if dim is not None and centroid is not None:
            raise InputError("give dim= or centroid=, not both")
        if dim is not None and not 0 <= int(dim) < n_latent:
            raise InputError(f"dim must be in 0..{n_latent - 1} (the model has {n_latent} latent dimensions), "
                             f"got {dim}")
        self.dim = None if dim is None else int(dim)
        if centroid is not None:
            centroid = torch.as_tensor(np.asarray(centroid, dtype=np.float32)).reshape(-1)
            if centroid.numel() != n_latent or not torch.isfinite(centroid).all():
                raise InputError(f"centroid must be {n_latent} finite latent coordinates, got shape "
                                 f"{tuple(centroid.shape)}")
        self.head = None if centroid is None else _CentredHead(self.mean, centroid)

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        """``(cells, n_latent)``, ``(cells, 1)`` for one dimension, or ``(cells, 1)`` distances."""
        if self.head is None:
            z = self.latent(counts)
            return z if self.dim is None else z[:, self.dim: self.dim + 1]
        if counts.dim() != 2 or counts.shape[1] != self.n_input:
            raise InputError(f"expected counts of shape (cells, {self.n_input}) in the model's gene order, "
                             f"got {tuple(counts.shape)}")
        _check_counts(counts)
        x = torch.log1p(counts) if self.log_variational else counts
        d = self.head(self.encoder(x))
        # -(d * d): a product of two input-dependent factors, uniform rule (each half; AttnLRP,
        # Achtibat et al. 2024, Prop. 3.3): coordinate i receives exactly -d_i^2.
        return -(d * d).sum(dim=1, keepdim=True)


def _module_of(model: Any) -> nn.Module:
    module = getattr(model, "module", model)
    if not isinstance(module, nn.Module):
        raise InputError(f"expected a trained scvi.model.SCANVI (or its .module), got {type(model).__name__}")
    return module


def scanvi_classifier(model: Any) -> ScanviClassifier:
    """scANVI's classifier as an explainable module: counts ``(cells, genes)`` -> class logits.

    Uses the trained model's own submodules (``z_encoder.encoder``, ``z_encoder.mean_encoder``,
    ``classifier``), shared, so explaining it explains scANVI: ``log1p`` (if the model uses it),
    the encoder, ``z = mean(q(z|x))`` and the classifier; no sampling. Equals
    ``model.module.classify(counts)`` in eval mode.
    """
    return ScanviClassifier(_module_of(model))


def latent_module(model: Any, dim: int | None = None, centroid: Any = None) -> ScanviLatent:
    """scANVI's latent space as an explainable module, counts in.

    ``dim=None, centroid=None``: all latent coordinates ``z = mean(q(z|x))`` ``(cells, n_latent)``
    (choose one with ``target``); ``dim=k``: coordinate ``k`` ``(cells, 1)``; ``centroid=c``:
    ``-||z - c||^2`` ``(cells, 1)``, the cell's closeness to a cluster's centre (higher = closer).
    The squared distance ``sum_i d_i * d_i`` is a product, distributed by the uniform rule
    (each factor half; Achtibat et al. 2024, Prop. 3.3), so latent coordinate ``i`` receives
    exactly ``-d_i^2``; the centroid is folded into the mean head's bias, whose share the
    epsilon rule absorbs like any bias.
    """
    return ScanviLatent(_module_of(model), dim=dim, centroid=centroid)


def explainer(model: Any, composite: str | Composite = "epsilon") -> ExpressionExplainer:
    """An :class:`~lrp_domains.bio.expression.ExpressionExplainer` for scANVI's cell-type
    prediction: counts in (genes matched by name), relevance per gene out."""
    from lrp_domains.bio.expression import ExpressionExplainer

    return ExpressionExplainer(scanvi_classifier(model), genes_of(model), classes_of(model),
                               composite=scanvi_composite(composite))
