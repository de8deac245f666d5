"""Gene relevance for scvi-tools models: scANVI's cell-type prediction and its latent space, counts in.

scANVI (Xu et al. 2021) encodes a cell's raw counts ``x`` as ``z = mean(q(z|x))`` and classifies
``z``. Its own path (``SCANVAE.classify`` with ``use_posterior_mean=True``) is::

    log1p(x) -> z_encoder.encoder (FCLayers: Linear, BatchNorm, ReLU, Dropout) -> z_encoder.mean_encoder
             -> classifier (FCLayers, Linear) -> logits

:func:`scanvi_classifier` and :func:`latent_module` wrap exactly those submodules of a trained
``scvi.model.SCANVI`` (shared, not copied, no sampling: the variance head and ``rsample`` are
never called) in a plain ``nn.Module`` that maps counts ``(cells, genes)`` to logits, to latent
coordinates, or to minus the squared distance to a centroid. Hand the classifier to
:class:`~lrp_domains.bio.cells.expression.ExpressionExplainer`, with :func:`scanvi_composite` for the
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

A user's model folder (``model.save(dir)``: ``dir/model.pt``) is read by :func:`read_model_folder`
without unpickling code: ``torch.load(weights_only=True)`` with an allowlist of exactly what such
files hold (numpy arrays and dtypes, dicts, ``defaultdict``); the pandas tables of the training
history are stood in for by inert placeholders (no pandas code runs) and never used; anything else
is refused, named. The module is rebuilt with scvi-tools' own module class from the saved init
parameters and registry, and the genes and classes come from the model's own registry.
``lrp-domains run genes DATA --model dir`` and ``lrp-domains bio genes DATA --model dir`` explain a
SCANVI's classifier that way; an SCVI (no classifier) is read for its latent space in Python
(:func:`latent_module`). A user's folder is never written to.

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
import inspect
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from lrp_domains.core.composite import Composite
from lrp_domains.core.engine.scope import ModuleCall, covered
from lrp_domains.core.functional import DIVISION_OPS
from lrp_domains.core.rules import Rule, single_input
from lrp_domains.errors import InputError

if TYPE_CHECKING:
    import anndata

    from lrp_domains.bio.cells.expression import ExpressionExplainer

__all__ = [
    "ConstantStdNorm",
    "ScanviClassifier",
    "ScanviLatent",
    "ScviFolder",
    "classes_of",
    "constant_denominator_handler",
    "explainer",
    "folder_explainer",
    "genes_of",
    "is_model_folder",
    "latent_module",
    "load_or_train",
    "pbmc_counts",
    "read_model_folder",
    "scanvi_classifier",
    "scanvi_composite",
    "train_scanvi",
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
def train_scanvi(
    adata: anndata.AnnData,
    labels_key: str = "bulk_labels",
    held_out: Sequence[str] = (),
    n_latent: int = 10,
    n_hidden: int = 64,
    n_layers: int = 1,
    max_epochs: int = 100,
    seed: int = 0,
    batch_size: int = 128,
) -> Any:
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
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        scvi.model.SCANVI.setup_anndata(data, labels_key="_scanvi_labels", unlabeled_category=UNLABELED)
        model = scvi.model.SCANVI(data, n_latent=n_latent, n_hidden=n_hidden, n_layers=n_layers)
        model.train(
            max_epochs=max_epochs,
            accelerator="cpu",
            devices=1,
            batch_size=batch_size,
            enable_progress_bar=False,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            check_val_every_n_epoch=None,
        )
    model.module.eval()
    return model


def _labelled(adata: anndata.AnnData, labels_key: str, held_out: Sequence[str]) -> anndata.AnnData:
    """A copy of ``adata`` with scANVI's label column (held-out cells unlabelled)."""
    data = adata.copy()
    labels = data.obs[labels_key].astype(str).to_numpy().copy()
    labels[np.isin(data.obs_names.astype(str), list(held_out))] = UNLABELED
    data.obs["_scanvi_labels"] = labels
    return data


_TRAIN_SIGNATURE = inspect.signature(train_scanvi)


def _train_settings(adata: anndata.AnnData, train: dict[str, Any]) -> dict[str, Any]:
    """Every setting :func:`train_scanvi` trains with: the keywords given and the defaults of the
    others (JSON-ready; ``held_out`` as a list of names). Unknown keywords are a TypeError."""
    bound = _TRAIN_SIGNATURE.bind(adata, **train)
    bound.apply_defaults()
    settings = {k: v for k, v in bound.arguments.items() if k != "adata"}
    settings["held_out"] = [str(name) for name in settings["held_out"]]
    return settings


def load_or_train(cache_dir: str | Path, adata: anndata.AnnData, **train: Any) -> Any:
    """The scANVI model cached under ``cache_dir``, or one trained with :func:`train_scanvi`
    (``train`` keywords) and cached there; or, where ``cache_dir`` holds a user's scvi-tools model
    (``model.save(cache_dir)``: a ``model.pt``), that model, read by :func:`read_model_folder` (a
    :class:`ScviFolder`, which :func:`scanvi_classifier`, :func:`explainer`, :func:`genes_of` and
    :func:`classes_of` accept); nothing is trained into, or written to, such a folder, and the
    ``train`` keywords are not used (a warning says so).

    The cache is the module's weights as ``weights.safetensors`` and, as ``settings.json``, every
    setting it was trained with (the keywords given and :func:`train_scanvi`'s defaults for the
    others), the genes and the label order; loading builds a fresh, untrained scANVI of those
    settings on ``adata`` (which holds the counts) and loads the weights into it. Other settings or
    genes are a cache miss: trained anew and the cache rewritten. A ``settings.json`` that this
    function did not write is refused, never replaced. scvi-tools' own ``load`` is not used: it
    unpickles (``torch.load(weights_only=False)``), and a cache folder is a file anyone could have
    written.

    For the command line (``--model``) the model is a folder saved by scvi-tools, or
    ``MODULE:FACTORY`` whose factory returns ``(module, genes, classes)`` (or a module, with
    ``--weights W.safetensors`` and a ``W.json`` beside it naming ``genes`` and ``classes``).
    """
    import json

    from safetensors.torch import load_file, save_file

    path = Path(cache_dir)
    if path.is_dir() and _has_model_files(path):
        if train:
            warnings.warn(
                f"{path} holds a saved scvi-tools model: it is loaded as saved, and the training settings "
                f"given ({', '.join(sorted(train))}) are not used",
                stacklevel=2,
            )
        return read_model_folder(path)
    weights, settings = path / "weights.safetensors", path / "settings.json"
    full = _train_settings(adata, train)
    wanted = {"train": full, "genes": [str(g) for g in adata.var_names]}
    saved = None
    if settings.is_file():
        try:
            saved = json.loads(settings.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            saved = None
        if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict) or "genes" not in saved:
            raise InputError(
                f"{settings} was not written by load_or_train (not its cache settings); it is not "
                "replaced: give another cache folder"
            )
    if weights.is_file() and saved is not None and saved.get("train") == full and saved.get("genes") == wanted["genes"]:
        import scvi

        data = _labelled(adata, full["labels_key"], full["held_out"])
        sizes = {k: full[k] for k in ("n_latent", "n_hidden", "n_layers")}
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stderr(io.StringIO()),
            contextlib.redirect_stdout(io.StringIO()),
        ):
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


# -- a user's model folder ---------------------------------------------------------------------------
MODEL_FILE = "model.pt"

#: Files of scvi-tools' save format before 0.15 (``attr.pkl`` is a plain pickle: not read).
LEGACY_FILES = ("attr.pkl", "model_params.pt")

#: What the genes commands explain, by the ``model_name`` in the saved registry.
READ_MODELS = ("SCANVI", "SCVI")


class ScviFolder(NamedTuple):
    """An scvi-tools model read from the folder ``model.save(dir)`` wrote (:func:`read_model_folder`)."""

    module: nn.Module
    """scvi-tools' own module (``SCANVAE`` for SCANVI, ``VAE`` for SCVI), weights loaded, eval mode."""
    genes: list[str]
    """The genes it reads (the saved ``var_names``), in its order."""
    classes: list[str] | None
    """SCANVI's classes in logit order (the label mapping without the unlabeled category, as
    ``predict`` names them); None for SCVI (no classifier)."""
    model_name: str
    """The model class scvi-tools saved (``SCANVI``, ``SCVI``)."""
    settings: dict[str, Any]
    """The saved init parameters (``n_hidden``, ``n_latent``, ``n_layers``, ``dispersion``, ...)."""
    path: Path
    """The ``model.pt`` read."""


def _has_model_files(folder: Path) -> bool:
    return any(folder.glob(f"*{MODEL_FILE}")) or any((folder / name).is_file() for name in LEGACY_FILES)


def is_model_folder(spec: str | Path) -> bool:
    """Whether ``--model spec`` names a folder (or a ``model.pt`` file) rather than ``MODULE:FACTORY``:
    a folder is read as one scvi-tools saved (:func:`read_model_folder`)."""
    path = Path(spec)
    return path.is_dir() or (path.is_file() and path.name.endswith(MODEL_FILE))


def _model_file(spec: str | Path) -> Path:
    """The ``model.pt`` that ``model.save(dir)`` (``dir/PREFIXmodel.pt`` with ``prefix=``) wrote."""
    path = Path(spec)
    if path.is_file():
        return path
    if not path.is_dir():
        raise InputError(f"no such scvi-tools model folder: {path}")
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    found = sorted(p.name for p in path.glob(f"*{MODEL_FILE}") if p.is_file())
    if len(found) == 1:
        return path / found[0]
    if found:
        raise InputError(f"{path} holds {len(found)} scvi-tools models ({', '.join(found)}); give the file")
    if any((path / name).is_file() for name in LEGACY_FILES):
        raise InputError(
            f"{path} was saved by scvi-tools before 0.15 (attr.pkl, a pickle that is not loaded: it can "
            f"run code); re-save it with scvi.model.SCANVI.convert_legacy_save({str(path)!r}, NEW_FOLDER)"
        )
    raise InputError(
        f"{path} holds no {MODEL_FILE}: give a folder saved by scvi-tools' model.save(FOLDER), or "
        "MODULE:FACTORY for a model built in Python"
    )


class _Unread:
    """Stands in for an object of a pandas global in ``model.pt`` (the training history's tables):
    built from nothing and running nothing, so no pandas code runs while loading; where the reader
    needs such a value it refuses, naming the global."""

    global_name: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Unread:  # noqa: D102
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:  # noqa: D105
        pass


def _stand_in(name: str) -> type:
    return type("Unread", (_Unread,), {"global_name": name, "__module__": __name__})


def _allowed_globals() -> dict[str, Any]:
    """Exactly the globals besides torch's own that scvi-tools' ``model.save`` writes outside its
    pandas history tables (``torch.serialization.get_unsafe_globals_in_checkpoint`` on a SCANVI
    and an SCVI saved with scvi-tools 1.4): numpy arrays (``_reconstruct``, ``ndarray``, ``dtype``;
    the names of numpy 1 and 2), numpy scalars, ``bytes``, ``dict``, ``slice`` and ``defaultdict``
    (the registry's field registries; read as a plain dict, since the weights-only unpickler fills
    only plain dicts)."""
    core = np._core if hasattr(np, "_core") else np.core
    reconstruct, scalar = core.multiarray._reconstruct, core.multiarray.scalar
    return {
        "numpy._core.multiarray._reconstruct": reconstruct,
        "numpy.core.multiarray._reconstruct": reconstruct,
        "numpy._core.multiarray.scalar": scalar,
        "numpy.core.multiarray.scalar": scalar,
        "numpy.ndarray": np.ndarray,
        "numpy.dtype": np.dtype,
        "builtins.bytes": bytes,
        "builtins.dict": dict,
        "builtins.slice": slice,
        "collections.defaultdict": _plain_dict,
    }


def _plain_dict(default_factory: Any = None) -> dict:
    """``collections.defaultdict(factory)`` read as a plain dict (the factory is not kept)."""
    return {}


def _dtype_classes() -> list[type]:
    """The classes of the built-in numpy dtypes (booleans, numbers, strings, objects): unpickling an
    array restores its dtype's state (``BUILD``), which the weights-only unpickler allows only on
    allowlisted types. Structured (void) dtypes are not among them."""
    return [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGOSU"]


def _short(error: BaseException) -> str:
    text = str(error)
    if "WeightsUnpickler error:" in text:  # torch's advice around it is about weights_only=False: not for us
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    return " ".join(text.split())[:300]


def _read_checkpoint(file: Path) -> dict[str, Any]:
    """``model.pt`` loaded with ``torch.load(weights_only=True)``: the allowlist of
    :func:`_allowed_globals`, inert stand-ins for pandas globals, anything else refused named."""
    serialization = torch.serialization
    if not hasattr(serialization, "get_unsafe_globals_in_checkpoint"):
        raise InputError("reading scvi-tools model folders needs torch >= 2.6 (torch.load's allowlists)")
    try:
        found = serialization.get_unsafe_globals_in_checkpoint(str(file))
    except Exception as error:  # not a zip of a pickle, damaged, ...: torch's own error types
        raise InputError(f"{file} is not a model file scvi-tools' model.save wrote ({_short(error)})") from None
    allowed = _allowed_globals()
    refused = [name for name in found if name not in allowed and not name.startswith("pandas.")]
    if refused:
        raise InputError(
            f"{file} holds {', '.join(refused)}, which scvi-tools' model.save does not write; refused "
            "(nothing in the file was run)"
        )
    safe = [(allowed[name], name) if name in allowed else (_stand_in(name), name) for name in found]
    safe += [(kind, f"numpy.dtypes.{kind.__name__}") for kind in _dtype_classes()]
    try:
        with serialization.safe_globals(safe):
            saved = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as error:  # the restricted unpickler's refusals and damaged files
        raise InputError(f"{file} could not be read safely ({_short(error)})") from None
    if not isinstance(saved, dict) or not {"model_state_dict", "var_names", "attr_dict"} <= set(saved):
        keys = sorted(map(str, saved)) if isinstance(saved, dict) else type(saved).__name__
        raise InputError(
            f"{file} is not a model file scvi-tools' model.save wrote (it holds {keys}; expected "
            "model_state_dict, var_names and attr_dict)"
        )
    return saved


def _needed(value: Any, where: str) -> Any:
    """``value`` unchanged, or an InputError where a part of it was not loaded (a stand-in)."""
    if isinstance(value, _Unread):
        raise InputError(
            f"{where} is a {value.global_name}, which is not loaded from scvi-tools model files (pandas "
            "objects are read only in the training history, and never used)"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _needed(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype == object):
        for index, item in enumerate(value):
            _needed(item, f"{where}[{index}]")
    return value


def read_model_folder(path: str | Path) -> ScviFolder:
    """An scvi-tools model from the folder ``model.save(path)`` wrote (or its ``model.pt``), without
    unpickling code and without writing anything there.

    ``model.pt`` is loaded with ``torch.load(weights_only=True)`` and an allowlist of exactly what
    such files hold (numpy arrays, dicts); pandas objects (the training history) become inert
    stand-ins and are never used; any other global is refused, named. The module is rebuilt with
    scvi-tools' own module class (``SCANVI._module_cls``, ``SCVI._module_cls``) from the saved init
    parameters and the registry (genes, batches, covariates, labels), and the saved weights are
    loaded into it (strictly). Genes are the saved ``var_names``; a SCANVI's classes are its label
    mapping up to ``n_labels`` (the unlabeled category excluded, as ``predict`` names them).
    Other model classes (TOTALVI, LinearSCVI, ...) and scvi-tools' pre-0.15 format are refused in
    one line.

    The result (:class:`ScviFolder`) goes wherever a trained model does: :func:`scanvi_classifier`,
    :func:`latent_module`, :func:`explainer`, :func:`genes_of`, :func:`classes_of`. On the command
    line, ``--model FOLDER``; the other ``--model`` is ``MODULE:FACTORY`` whose factory returns
    ``(module, genes, classes)`` (or a module, with ``--weights W.safetensors`` and a ``W.json``
    beside it naming ``genes`` and ``classes``).
    """
    file = _model_file(path)
    saved = _read_checkpoint(file)
    attr = saved["attr_dict"] if isinstance(saved["attr_dict"], dict) else {}

    def needed(key: str) -> Any:  # only what is read: the training history is never looked at
        return _needed(attr.get(key), f"{file}: attr_dict[{key!r}]")

    registry = needed("registry_")
    if not isinstance(registry, dict) or not isinstance(registry.get("field_registries"), dict):
        raise InputError(f"{file} has no scvi-tools registry (attr_dict['registry_']); not a model.save folder")
    name = str(registry.get("model_name"))
    if name not in READ_MODELS:
        raise InputError(
            f"{file} holds an scvi-tools {name} model; read here are SCANVI (its cell-type classifier, "
            "for the genes commands) and SCVI (its latent space, in Python: scvi_models.latent_module)"
        )
    import scvi

    model_cls = getattr(scvi.model, name)
    state = saved["model_state_dict"]
    if isinstance(state, dict):  # pyro's parameter store, saved beside every module (pyro modules use it)
        state = {k: v for k, v in state.items() if k != "pyro_param_store"}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{file}: model_state_dict is not a mapping of tensors")
    genes = [str(g) for g in np.asarray(_needed(saved["var_names"], f"{file}: var_names")).ravel().tolist()]
    settings = _init_params(needed("init_params_"), file)
    fields = registry["field_registries"]

    def summary(field: str) -> dict[str, Any]:
        return dict(fields.get(field, {}).get("summary_stats", {}))

    keys = scvi.REGISTRY_KEYS
    n_batch = int(summary(keys.BATCH_KEY).get("n_batch", 1))
    n_vars = int(summary(keys.X_KEY).get("n_vars", len(genes)))
    if n_vars != len(genes):
        raise InputError(f"{file}: the registry reads {n_vars} genes but var_names names {len(genes)}")
    categorical = fields.get(keys.CAT_COVS_KEY, {}).get("state_registry", {})
    n_cats_per_cov = tuple(int(n) for n in categorical["n_cats_per_key"]) if categorical.get("n_cats_per_key") else None
    use_size_factor_key = registry.get("setup_args", {}).get(f"{keys.SIZE_FACTOR_KEY}_key") is not None
    classes = None
    labels = fields.get(keys.LABELS_KEY, {})
    mapping = [str(c) for c in labels.get("state_registry", {}).get("categorical_mapping", [])]
    n_labels = int(summary(keys.LABELS_KEY).get("n_labels", max(len(mapping), 1)))
    if name == "SCANVI":
        n_labels = _scanvi_n_labels(n_labels, needed("unlabeled_category_"), needed("labels_"))
        classes = mapping[:n_labels]
    arguments: dict[str, Any] = {
        "n_input": n_vars,
        "n_batch": n_batch,
        "n_labels": n_labels,
        "n_continuous_cov": int(summary(keys.CONT_COVS_KEY).get("n_extra_continuous_covs", 0)),
        "n_cats_per_cov": n_cats_per_cov,
        "use_size_factor_key": use_size_factor_key,
        **settings,
    }
    if not use_size_factor_key and not settings.get("use_observed_lib_size", True):
        # buffers of the module, overwritten by the saved weights below
        arguments["library_log_means"] = np.zeros((1, n_batch), dtype=np.float32)
        arguments["library_log_vars"] = np.ones((1, n_batch), dtype=np.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = model_cls._module_cls(**arguments)
    except (TypeError, ValueError) as error:
        raise InputError(
            f"{file}: scvi-tools {scvi.__version__} cannot rebuild this {name} from its saved settings "
            f"(saved by scvi-tools {registry.get('scvi_version', '?')}): {_short(error)}"
        ) from None
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise InputError(
            f"{file}: the saved weights do not fit the {name} rebuilt from its settings: {_short(error)}"
        ) from None
    module.eval()
    return ScviFolder(module, genes, classes, name, settings, file)


def _init_params(init: Any, file: Path) -> dict[str, Any]:
    """The module's keyword arguments from the saved ``init_params_``, flattened as scvi-tools'
    own ``load`` does (``non_kwargs`` and the ``**kwargs`` dicts)."""
    if not isinstance(init, dict):
        raise InputError(f"{file} has no saved init parameters (attr_dict['init_params_'])")
    if "non_kwargs" in init:
        plain, extra = dict(init["non_kwargs"]), dict(init.get("kwargs", {}))
    else:  # scvi-tools' older layout: keyword dicts beside the plain values
        plain = {k: v for k, v in init.items() if not isinstance(v, dict)}
        extra = {k: v for k, v in init.items() if isinstance(v, dict)}
    settings = {**plain, **{k: v for group in extra.values() for k, v in dict(group).items()}}
    for key in ("datamodule", "use_cuda", "unlabeled_category", "pretrained_model"):
        settings.pop(key, None)
    return settings


def _scanvi_n_labels(n_labels: int, unlabeled: Any, labels: Any) -> int:
    """scANVI's classifier size as ``SCANVI.__init__`` computes it from the labels it was built on:
    the categories without the unlabeled one."""
    seen = set(map(str, np.asarray(labels).ravel().tolist())) if labels is not None else None
    if seen is None:
        return n_labels - 1 if unlabeled is not None else n_labels
    if unlabeled is not None and str(unlabeled) in seen:
        return n_labels - 1
    return n_labels - 1 if len(seen) == n_labels - 1 else n_labels


def folder_explainer(path: str | Path, composite: str | Composite = "epsilon") -> ExpressionExplainer:
    """The :class:`~lrp_domains.bio.cells.expression.ExpressionExplainer` of the SCANVI saved in ``path``
    (:func:`read_model_folder`, then :func:`explainer`: counts in, its classifier's logits out)."""
    return explainer(read_model_folder(path), composite)


def genes_of(model: Any) -> list[str]:
    """The genes a trained scvi-tools model (or a :class:`ScviFolder`) reads, in its order."""
    if isinstance(model, ScviFolder):
        return list(model.genes)
    return [str(g) for g in model.adata.var_names]


def classes_of(model: Any) -> list[str]:
    """scANVI's output classes in logit order (the label mapping without the unlabeled category)."""
    if isinstance(model, ScviFolder):
        if model.classes is None:
            raise InputError(
                f"{model.path} holds an scvi-tools {model.model_name} model, which has no classifier: "
                "gene relevance for cell types needs a SCANVI (scvi.model.SCANVI.from_scvi_model); "
                "its latent space is explained in Python: scvi_models.latent_module(read_model_folder(.))"
            )
        return list(model.classes)
    return [str(c) for c in list(model._label_mapping)[: model.module.n_labels]]


# -- rules -------------------------------------------------------------------------------------------
class ConstantStdNorm(Rule):
    """LayerNorm with its standard deviation treated as a constant (CP-LRP, Ali et al. 2022,
    Sec. 3.2; as for LayerNorm in AttnLRP): ``y = (x - mean(x)) / std(x)`` with ``std`` detached,
    so the norm is linear in ``x`` and the centring (a linear map) keeps its gradient."""

    cost = 2  # the forward and a backward of the gradient's size (elementwise)

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
    from lrp_domains.core.engine.attribution import resolve_composite

    base = resolve_composite(composite)
    rules = {nn.LayerNorm: ConstantStdNorm(), **base.rules}
    functional = {**{name: constant_denominator_handler for name in DIVISION_OPS}, **base.functional}
    return Composite(
        rules,
        first=base.first,
        canonizers=base.canonizers,
        last=base.last,
        functional=functional,
        name=base.name,
        conserves=base.conserves,
    )


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
        raise InputError(
            f"{what} contain negative values (in {len(rows)} cells, e.g. row {int(rows[0])}); scANVI "
            "reads raw counts, not log-normalised or scaled values: pass adata.layers['counts'] or "
            "the raw count matrix"
        )


class _Encoder(nn.Module):
    """Counts -> ``mean(q(z|x))`` through an scvi-tools module's own ``z_encoder`` (shared)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        for name in ("z_encoder", "log_variational"):
            if not hasattr(module, name):
                raise InputError(f"expected a trained scvi-tools model (scvi.model.SCANVI), its module has no {name}")
        if getattr(module, "encode_covariates", False) or getattr(module, "n_continuous_cov", 0):
            raise InputError(
                "this scvi-tools model encodes covariates (encode_covariates=True); the adapter "
                "supports models whose encoder reads the counts only (the default)"
            )
        if getattr(module, "latent_distribution", "normal") != "normal":
            raise InputError("the adapter supports latent_distribution='normal' (the default) only")
        self.log_variational = bool(module.log_variational)
        self.encoder = module.z_encoder.encoder
        self.mean = module.z_encoder.mean_encoder
        self.n_input = int(module.n_input)

    def latent(self, counts: torch.Tensor) -> torch.Tensor:
        """``z = mean(q(z | counts))`` as scANVI computes it (no sampling)."""
        if counts.dim() != 2 or counts.shape[1] != self.n_input:
            raise InputError(
                f"expected counts of shape (cells, {self.n_input}) in the model's gene order, got {tuple(counts.shape)}"
            )
        _check_counts(counts)
        x = torch.log1p(counts) if self.log_variational else counts
        # FCLayers.forward with no covariates: the encoder's layers in order, Nones skipped.
        return self.mean(self.encoder(x))


class ScanviClassifier(_Encoder):
    """Counts ``(cells, genes)`` -> scANVI's class logits (``SCANVAE.classify``, posterior mean)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module)
        if not hasattr(module, "classifier"):
            raise InputError(
                f"this scvi-tools module ({type(module).__name__}) has no classifier; scanvi_classifier "
                "needs a SCANVI's (latent_module explains an SCVI's latent space)"
            )
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
            raise InputError(
                f"dim must be in 0..{n_latent - 1} (the model has {n_latent} latent dimensions), got {dim}"
            )
        self.dim = None if dim is None else int(dim)
        if centroid is not None:
            centroid = torch.as_tensor(np.asarray(centroid, dtype=np.float32)).reshape(-1)
            if centroid.numel() != n_latent or not torch.isfinite(centroid).all():
                raise InputError(
                    f"centroid must be {n_latent} finite latent coordinates, got shape {tuple(centroid.shape)}"
                )
        self.head = None if centroid is None else _CentredHead(self.mean, centroid)

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        """``(cells, n_latent)``, ``(cells, 1)`` for one dimension, or ``(cells, 1)`` distances."""
        if self.head is None:
            z = self.latent(counts)
            return z if self.dim is None else z[:, self.dim : self.dim + 1]
        if counts.dim() != 2 or counts.shape[1] != self.n_input:
            raise InputError(
                f"expected counts of shape (cells, {self.n_input}) in the model's gene order, got {tuple(counts.shape)}"
            )
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
    """An :class:`~lrp_domains.bio.cells.expression.ExpressionExplainer` for scANVI's cell-type
    prediction: counts in (genes matched by name), relevance per gene out."""
    from lrp_domains.bio.cells.expression import ExpressionExplainer

    classes = classes_of(model)  # first: an SCVI is refused by name, not by a missing classifier
    return ExpressionExplainer(
        scanvi_classifier(model), genes_of(model), classes, composite=scanvi_composite(composite)
    )
