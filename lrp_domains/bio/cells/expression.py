"""Gene-level relevance for expression models (cells or patients x genes).

:class:`ExpressionExplainer` matches the data's genes to the model's by name, explains one class
score per sample with an LRP composite (one forward and one backward pass per batch), and
returns a :class:`~lrp_domains.bio.cells.genes.GeneExplanation` with per-class and per-sample gene
rankings, marker recovery and the comparison with differential expression.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from lrp_domains.bio.cells.genes import RUN_COLUMNS as GENE_RUN_COLUMNS
from lrp_domains.bio.cells.genes import GeneExplanation, explanation_from_rows, gene_report_context
from lrp_domains.bio.cells.readers import labeled_target
from lrp_domains.core.composite import Composite
from lrp_domains.core.engine.attribution import explain, model_dtype, resolve_composite
from lrp_domains.core.engine.targets import resolve_targets
from lrp_domains.domains import DomainExplainer, Reader
from lrp_domains.errors import InputError
from lrp_domains.options import Option

ClassTarget = Union[None, int, str, Sequence[Union[int, str]], np.ndarray, torch.Tensor, Callable]


class ExpressionExplainer(DomainExplainer):
    """Explain an expression classifier's predictions gene by gene.

    Parameters
    ----------
    model:
        Maps ``(N, genes)`` to ``(N, classes)`` scores; explained in eval mode, returned unchanged.
    genes:
        The model's input genes, in its order (unique names).
    classes:
        Output names (default: ``"0"``, ``"1"``, ...).
    composite:
        A composite name or :class:`~lrp_domains.Composite`. Default ``epsilon``, chosen by the
        ``lrp-domains bench genes`` measurement: on the PBMC MLP no gamma, z+ or alpha-beta
        variant removed the predicted class faster in the gene-deletion test (see the README);
        for a ReLU MLP it equals gradient x input, seeded with the logit.
    """

    kind: ClassVar[str] = "genes"
    item: ClassVar[str] = "cell"
    default_composite: ClassVar[str] = "epsilon"
    run_options: ClassVar[dict[str, Any]] = {"target": None, "batch_size": 256, "missing": "error", "ledger": False}
    option_types: ClassVar[dict[str, Option]] = {"missing": Option("choice", ("error", "zero"))}
    columns: ClassVar[tuple[str, ...]] = GENE_RUN_COLUMNS
    report: ClassVar[str] = "lrp_domains.report.genes:write_gene_report"

    def __init__(
        self,
        model: nn.Module,
        genes: Sequence[str],
        classes: Sequence[str] | None = None,
        composite: str | Composite = "epsilon",
    ) -> None:
        genes = [str(g) for g in genes]
        duplicated = sorted({g for g in genes if genes.count(g) > 1})
        if duplicated:
            raise ValueError(f"the model's gene list names {len(duplicated)} genes twice: {_few(duplicated)}")
        self.model = model
        self.genes = genes
        self.classes = [str(c) for c in classes] if classes is not None else None
        self.composite = resolve_composite(composite)

    @classmethod
    def default(cls, composite: str | Composite = "epsilon") -> ExpressionExplainer:
        """The default PBMC classifier (an MLP on ``scanpy.datasets.pbmc68k_reduced``)."""
        from lrp_domains.bio.cells.pbmc_mlp import load_default_model

        model, genes, classes = load_default_model()
        return cls(model, genes, classes, composite=composite)

    @classmethod
    def from_options(
        cls, model: str | None = None, weights: str | None = None, composite: str | None = None
    ) -> ExpressionExplainer:
        """The explainer ``--model``, ``--weights`` and ``--composite`` name.

        - no ``model``: the default PBMC classifier;
        - ``model`` a folder saved by scvi-tools (``model.save(FOLDER)``, holding ``model.pt``): its
          SCANVI's classifier, counts in, genes and classes from the model's own registry
          (:func:`lrp_domains.bio.cells.scvi_models.read_model_folder`: no pickled code is run, nothing is
          written there); ``weights`` is refused (the folder holds its own);
        - ``model`` ``MODULE:FACTORY``: the factory returns ``(module, genes, classes)`` (genes in
          the module's input order, classes in its output order), or a module alone with
          safetensors ``weights`` and a JSON sidecar beside them (``W.json`` for
          ``W.safetensors``) naming ``{"genes": [...], "classes": [...]}``.
        """
        if model is None:
            if weights is not None:
                raise InputError("--weights needs --model MODULE:FACTORY (the default model has its own weights)")
            return cls.default(composite=composite or cls.default_composite)
        from lrp_domains.bio.cells import scvi_models

        if scvi_models.is_model_folder(model):
            if weights is not None:
                raise InputError(
                    f"--weights is for --model MODULE:FACTORY; {model} is a model folder, which holds its "
                    "own weights (model.pt)"
                )
            return scvi_models.folder_explainer(model, composite or cls.default_composite)
        from lrp_domains.models import load_user_model

        net, genes, classes = load_user_model(model, weights)
        if genes is None:
            raise InputError(
                f"--model {model}: for genes the factory must return (model, genes, classes), or the "
                "weights need a .json sidecar naming the genes"
            )
        return cls(net, genes, classes, composite=composite or cls.default_composite)

    # -- data -------------------------------------------------------------------------------------
    def align(self, data: Any, layer: str | None = None, missing: str = "error") -> tuple[np.ndarray, list[str]]:
        """``(samples x model genes)`` values and sample names from an AnnData, a DataFrame
        (columns = genes) or an array already in the model's gene order.

        Columns are reordered to the model's genes; extra genes are ignored. Missing genes are an
        error listing them, or zeros with ``missing="zero"`` (a warning says how many).
        Duplicated gene names, NaN and Inf are errors naming the genes and samples.
        """
        if missing not in ("error", "zero"):
            raise ValueError(f"missing must be 'error' or 'zero', got {missing!r}")
        values, columns, samples = _table(data, layer)
        if columns is None:
            if values.shape[1] != len(self.genes):
                raise ValueError(
                    f"an array needs one column per model gene ({len(self.genes)}, in the model's order), got shape "
                    f"{values.shape}; pass an AnnData or a DataFrame to match genes by name"
                )
            aligned = values
        else:
            duplicated = columns[columns.duplicated()].unique().tolist()
            if duplicated:
                raise ValueError(f"the data names {len(duplicated)} genes twice: {_few(duplicated)}; make them unique")
            position = pd.Index(columns).get_indexer(self.genes)
            absent = [g for g, p in zip(self.genes, position) if p < 0]
            if absent and missing == "error":
                raise ValueError(
                    f"{len(absent)} of the model's {len(self.genes)} genes are not in the data: {_few(absent)}. "
                    "Check gene identifiers (symbols vs Ensembl IDs) or pass missing='zero' (CLI: --missing zero) "
                    "to fill them with 0"
                )
            if absent:
                warnings.warn(
                    f"{len(absent)} of the model's {len(self.genes)} genes are not in the data and were set to 0",
                    stacklevel=3,
                )
            aligned = np.zeros((values.shape[0], len(self.genes)), dtype=values.dtype)
            present = position >= 0
            aligned[:, present] = values[:, position[present]]
        bad = ~np.isfinite(aligned)
        if bad.any():
            rows, cols = np.nonzero(bad)
            raise ValueError(
                f"{int(bad.sum())} values are NaN or infinite, in genes {_few(sorted({self.genes[c] for c in cols}))} "
                f"of samples {_few([samples[r] for r in dict.fromkeys(rows.tolist())])}"
            )
        self._check_range(aligned, samples)
        return aligned, samples

    def _check_range(self, values: np.ndarray, samples: Sequence[str]) -> None:
        """Values the model's dtype cannot hold (1e39 in a float32 model) would become Inf, then NaN
        relevance: an error naming them, as NaN and Inf in the data are."""
        dtype = model_dtype(self.model) or torch.get_default_dtype()
        limit = torch.finfo(dtype).max
        if limit >= np.finfo(values.dtype).max:
            return
        over = np.abs(values) > limit
        if over.any():
            rows, cols = np.nonzero(over)
            name = str(dtype).removeprefix("torch.")
            raise ValueError(
                f"{int(over.sum())} values are beyond the range of the model's {name} (|value| > {limit:.3g}), "
                f"in genes {_few(sorted({self.genes[c] for c in cols}))} of samples "
                f"{_few([samples[r] for r in dict.fromkeys(rows.tolist())])}; scale the data as the model was trained "
                "(e.g. log1p of normalised counts)"
            )

    # -- explanation -----------------------------------------------------------------------------
    def explain(
        self,
        data: Any,
        target: ClassTarget = None,
        layer: str | None = None,
        batch_size: int = 256,
        progress: bool = False,
        missing: str = "error",
        ledger: bool = False,
    ) -> GeneExplanation:
        """Relevance of every gene for one class score per sample.

        ``target``: None (each sample's predicted class), a class name or index, one per sample
        (e.g. the true labels), or a callable on the scores. Relevance is seeded with the
        explained score itself (not a one-hot 1), so its sign follows the score's. ``ledger``: also
        record where ``delta`` went (:attr:`GeneExplanation.ledger`).
        """
        values, samples = self.align(data, layer, missing)
        inputs = torch.as_tensor(values, dtype=model_dtype(self.model) or torch.get_default_dtype())
        targets = resolve_targets(target, len(samples), self.classes)
        try:
            result = explain(
                self.model,
                inputs,
                target=targets,
                composite=self.composite,
                batch_size=batch_size,
                progress=progress,
                check_delta=False,
                ledger=ledger,
            )
        except RuntimeError as error:
            first = next((m for m in self.model.modules() if isinstance(m, nn.Linear)), None)
            if first is not None and first.in_features != len(self.genes):
                raise InputError(
                    f"the model takes {first.in_features} inputs (its first Linear layer) but was given "
                    f"{len(self.genes)} genes: the gene list (the factory's, or the .json beside the "
                    f"weights) must name one gene per model input, in the model's order"
                ) from error
            raise
        classes = self.classes or [str(i) for i in range(result.output.shape[1])]
        output = pd.DataFrame(result.output.double().cpu().numpy(), index=samples, columns=classes)
        target_names = None if result.target is None else [classes[i] for i in result.target.tolist()]
        return GeneExplanation(
            relevance=pd.DataFrame(result.relevance.double().cpu().numpy(), index=samples, columns=self.genes),
            output=output,
            prediction=_predictions(output),
            target=None if target_names is None else pd.Series(target_names, index=samples, name="target"),
            explained=pd.Series(result.explained.double().cpu().numpy(), index=samples, name="explained"),
            delta=pd.Series(result.delta.double().cpu().numpy(), index=samples, name="delta"),
            composite=self.composite.name,
            target_given=target is not None,
            ledger_rows=result.ledger_rows,
        )

    # -- the contract (runs) ----------------------------------------------------------------
    def reader(self, path: str | Path, column: str | None = None) -> Reader:
        """Cells of ``.h5ad`` (backed mode) or samples of a ``.csv``/``.tsv`` table (see
        :mod:`lrp_domains.bio.cells.readers`); ``column``: a label column (an obs column, or a column of the
        table) whose value per sample is the class explained for it."""
        from lrp_domains.bio.cells.readers import cells_reader

        return cells_reader(path, column)

    def explain_batch(
        self,
        ids: Sequence[str],
        items: Any,
        first_row: int = 0,
        target: ClassTarget = None,
        batch_size: int = 256,
        missing: str = "error",
        ledger: bool = False,
    ) -> GeneExplanation:
        """Explain one shard's cells (a cells x genes table; with labels, each cell's label)."""
        data, target = labeled_target(items, target)
        return self.explain(data, target=target, batch_size=batch_size, missing=missing, ledger=ledger)

    def result_rows(self, result: GeneExplanation, ids: Sequence[str]) -> dict[str, list]:
        """Per cell: prediction, target and the relevance of each model gene (names in the manifest)."""
        from lrp_domains.bio.cells.genes import run_rows

        return run_rows(result, len(ids))

    @classmethod
    def report_context(cls, manifest: dict[str, Any]) -> dict[str, Any]:
        """The run's ``.h5ad`` input (read again, for the report's differential-expression
        comparison) and its label column; nothing for tables or a moved file."""
        return gene_report_context(manifest)

    @classmethod
    def result_from_rows(cls, rows: pd.DataFrame, settings: dict[str, Any]) -> GeneExplanation:
        """The gene explanation of a run's rows (:func:`~lrp_domains.bio.cells.genes.explanation_from_rows`)."""
        return explanation_from_rows(rows, settings)

    def settings(self) -> dict[str, Any]:
        """The model's genes and classes."""
        return {"genes": list(self.genes), "classes": self.classes}


def _predictions(output: pd.DataFrame) -> pd.Series:
    """Each sample's highest-scoring class; None where every score is NaN (a model that gave NaN)."""
    scored = output.notna().any(axis=1)
    return output.fillna(-np.inf).idxmax(axis=1).astype(object).where(scored, None)


def _floats(values: Any) -> np.ndarray:
    """``values`` as float64 when they are float64 (a float64 model keeps their precision), else float32."""
    array = np.asarray(values)
    return array.astype(np.float64 if array.dtype == np.float64 else np.float32, copy=False)


def _table(data: Any, layer: str | None) -> tuple[np.ndarray, pd.Index | None, list[str]]:
    """Values, gene names (None for bare arrays) and sample names of ``data``."""
    try:
        import anndata
    except ImportError:  # pragma: no cover - anndata comes with the bio extra
        anndata = None
    if anndata is not None and isinstance(data, anndata.AnnData):
        if layer is not None and layer not in data.layers:
            raise KeyError(f"no layer {layer!r}; the AnnData has {list(data.layers)}")
        matrix = data.layers[layer] if layer is not None else data.X
        matrix = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
        return _floats(matrix), pd.Index(data.var_names.astype(str)), list(data.obs_names.astype(str))
    if layer is not None:
        raise TypeError("layer= applies to AnnData inputs only")
    if isinstance(data, pd.DataFrame):
        return _floats(data.to_numpy()), pd.Index(data.columns.astype(str)), [str(i) for i in data.index]
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    try:
        values = _floats(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"expression data must be numbers (samples x genes): {error}") from None
    if values.ndim != 2:
        raise ValueError(f"expression data must be 2-D (samples x genes), got shape {values.shape}")
    return values, None, [str(i) for i in range(values.shape[0])]


def _few(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in list(items)[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
