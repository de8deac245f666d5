"""``GeneExplanation``: samples x genes relevance with rankings, markers and DE comparison."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrp_domains.core.engine.ledger import LedgerRows


@dataclass
class GeneExplanation:
    """Relevance of each gene for one class score per sample.

    ``relevance`` (samples x genes), ``output`` (samples x classes, the model's scores),
    ``prediction`` and ``target`` (class names per sample; ``target`` is None for callables;
    ``target_given`` is False when the targets are the model's own predictions),
    ``explained`` (the explained score) and ``delta`` (explained minus summed relevance).
    """

    relevance: pd.DataFrame
    output: pd.DataFrame
    prediction: pd.Series
    target: pd.Series | None
    explained: pd.Series
    delta: pd.Series
    composite: str
    target_given: bool = True
    #: With ``explain(..., ledger=True)``: where ``delta`` went, per sample (:attr:`ledger`).
    ledger_rows: LedgerRows | None = None

    @property
    def ledger(self) -> pd.DataFrame:
        """Where the relevance went: per sample and module, what the module absorbed (see
        :attr:`lrp_domains.core.engine.result.Explanation.ledger`); ``example`` indexes the samples."""
        if self.ledger_rows is None:
            raise ValueError("this explanation has no ledger: explain with ledger=True")
        return self.ledger_rows.to_frame()

    @property
    def genes(self) -> list[str]:
        """The model's genes, in its order."""
        return list(self.relevance.columns)

    def _groups(self) -> pd.Series:
        return self.target if self.target is not None else self.prediction

    def rank_genes(self, by: str = "class", n: int = 50) -> pd.DataFrame:
        """Top ``n`` genes per explained class (``by="class"``: mean relevance over the samples
        explained for that class) or per sample. Columns: group, rank, gene, mean_relevance,
        fraction_positive (the share of the group's samples where the gene's relevance is > 0)."""
        if by == "class":
            groups = self._groups()
            frames = []
            for group, index in groups.groupby(groups).groups.items():
                block = self.relevance.loc[index]
                frames.append(_top(str(group), block.mean(0), (block > 0).mean(0), n))
        elif by == "sample":
            frames = [_top(str(sample), row, (row > 0).astype(float), n) for sample, row in self.relevance.iterrows()]
        else:
            raise ValueError(f"by must be 'class' or 'sample', got {by!r}")
        return pd.concat(frames, ignore_index=True)

    def marker_overlap(self, markers: Mapping[str, Iterable[str]], k: Sequence[int] = (20, 50)) -> pd.DataFrame:
        """Recall of known marker genes in each class's top ``k``.

        Columns: ``class, k``; ``markers`` (the class's markers among the model's genes), ``found``
        and ``found_genes`` (those in its top ``k``), ``recall`` (NaN for a class with no marker
        in the model's genes or no explained sample), ``absent_genes`` (its markers the model
        lacks: left out of the recall, comma-separated) and ``explained_samples``. Markers the
        model lacks are named in one warning."""
        rows = []
        genes = set(self.genes)
        absent_all: dict[str, None] = {}
        for cls, listed in markers.items():
            listed = list(listed)
            present = [g for g in listed if g in genes]
            absent = [g for g in listed if g not in genes]
            absent_all.update(dict.fromkeys(absent))
            for top in k:
                ranked = self._class_top(cls, top)
                found = [g for g in present if g in ranked]
                rows.append(
                    {
                        "class": cls,
                        "k": top,
                        "markers": len(present),
                        "found": len(found),
                        "recall": len(found) / len(present) if present and ranked else np.nan,
                        "found_genes": ",".join(found),
                        "absent_genes": ",".join(absent),
                        "explained_samples": int((self._groups() == cls).sum()),
                    }
                )
        if absent_all:
            some = "1 marker gene is" if len(absent_all) == 1 else f"{len(absent_all)} marker genes are"
            warnings.warn(
                f"{some} not among the model's {len(genes)} genes and left out of the marker recall: "
                f"{', '.join(absent_all)}",
                stacklevel=2,
            )
        return pd.DataFrame(rows)

    def _class_top(self, cls: str, n: int) -> list[str]:
        groups = self._groups()
        index = groups.index[groups == cls]
        if len(index) == 0:
            return []
        return self.relevance.loc[index].mean(0).sort_values(ascending=False).index[:n].tolist()

    def compare_with_de(self, adata: Any, groupby: str, n: int = 50, method: str = "wilcoxon") -> pd.DataFrame:
        """Overlap of each class's top ``n`` genes with the top ``n`` differentially expressed genes
        of that group (scanpy ``rank_genes_groups``, Wilcoxon by default) in ``adata``."""
        try:
            import scanpy as sc
        except ImportError as error:
            raise ImportError("compare_with_de needs scanpy: pip install scanpy (or lrp-domains[bio])") from error
        if groupby not in adata.obs:
            raise KeyError(f"no column {groupby!r} in adata.obs; it has {list(adata.obs.columns)}")
        data = adata.copy()
        data.obs[groupby] = data.obs[groupby].astype(str).astype("category")
        with warnings.catch_warnings():  # scanpy's log fold changes of all-zero genes: its noise, not ours
            warnings.filterwarnings("ignore", "invalid value encountered in log2", RuntimeWarning)
            warnings.filterwarnings("ignore", "divide by zero encountered in log2", RuntimeWarning)
            sc.tl.rank_genes_groups(data, groupby, method=method, n_genes=n, use_raw=False)
        de = pd.DataFrame(data.uns["rank_genes_groups"]["names"])
        rows = []
        for cls in de.columns:
            ours = self._class_top(cls, n)
            if not ours:
                continue
            theirs = [g for g in de[cls].tolist()[:n] if g in set(self.genes)]
            shared = sorted(set(ours) & set(theirs))
            rows.append(
                {
                    "class": cls,
                    "n": n,
                    "overlap": len(shared),
                    "fraction": len(shared) / n,
                    "shared_genes": ",".join(shared),
                }
            )
        return pd.DataFrame(rows)

    def to_anndata(self, adata: Any, key: str = "lrp", n: int = 50) -> Any:
        """Store the relevance as ``adata.layers[key]`` (genes the model lacks get 0) and the
        per-class rankings in ``adata.uns[key]``; cells must be the explained samples, in order."""
        if list(map(str, adata.obs_names)) != list(self.relevance.index):
            raise ValueError("the AnnData's cells are not the explained samples (same names, same order)")
        layer = self.relevance.reindex(columns=list(map(str, adata.var_names)), fill_value=0.0)
        adata.layers[key] = layer.to_numpy(dtype=np.float32)
        ranking = self.rank_genes("class", n)
        adata.uns[key] = {
            "composite": self.composite,
            "rankings": {column: ranking[column].to_numpy() for column in ranking.columns},
        }
        return adata

    def to_frame(self) -> pd.DataFrame:
        """Long table: sample, gene, relevance (with each sample's target and prediction)."""
        frame = self.relevance.stack().rename("relevance").reset_index()
        frame.columns = ["sample", "gene", "relevance"]
        frame["prediction"] = frame["sample"].map(self.prediction)
        if self.target is not None:
            frame["target"] = frame["sample"].map(self.target)
        return frame


def run_rows(result: GeneExplanation, n: int) -> dict[str, list]:
    """A gene explanation's run columns, one value per sample (``n`` samples): explained, delta,
    prediction, target and the relevance of each gene (names in the manifest)."""
    return {
        "explained": result.explained.to_numpy().tolist(),
        "delta": result.delta.to_numpy().tolist(),
        "prediction": result.prediction.to_numpy().tolist(),
        "target": [None] * n if result.target is None else result.target.to_numpy().tolist(),
        "output": [list(values) for values in result.output.to_numpy()],
        "relevance": [list(values) for values in result.relevance.to_numpy()],
        "ledger": [None] * n if result.ledger_rows is None else [result.ledger_rows.example_json(i) for i in range(n)],
    }


#: The run columns of a gene explanation (:func:`run_rows`).
RUN_COLUMNS = ("explained", "delta", "prediction", "target", "output", "relevance", "ledger")


def run_to_anndata(run_dir: str | Path, data: str | Path | None = None, key: str = "lrp", n: int = 50) -> Any:
    """A finished gene run (expression or gene-transformer) as the AnnData of its input: the cells'
    relevance in ``layers[key]`` (genes the model lacks 0; cells whose status is not ok NaN), the
    per-class rankings in ``uns[key]`` (over the cells that are ok), and ``obs`` columns
    ``{key}_prediction``, ``{key}_target``, ``{key}_explained``, ``{key}_delta``, ``{key}_status``.
    ``data``: the input (default: the file the run read; a table becomes an AnnData)."""
    import anndata

    from lrp_domains.bio.cells.readers import read_expression
    from lrp_domains.errors import InputError
    from lrp_domains.run.manifest import finished_run

    manifest, files = finished_run(run_dir, "the h5ad")
    settings = manifest["settings"]
    if "genes" not in settings:
        raise InputError(f"{run_dir} holds a {settings.get('kind')} run, not a gene run (genes, gene-transformer)")
    rows = pd.concat([pd.read_parquet(path) for path in files], ignore_index=True)
    source = Path(data) if data is not None else Path(str(manifest["input"].get("path", "")))
    if not source.is_file():
        raise InputError(f"{source}: the run's input is not there; give it with --data")
    loaded = read_expression(source).data
    adata = (
        loaded.copy()
        if isinstance(loaded, anndata.AnnData)
        else anndata.AnnData(
            loaded.to_numpy(np.float32),
            obs=pd.DataFrame(index=loaded.index.astype(str)),
            var=pd.DataFrame(index=loaded.columns.astype(str)),
        )
    )
    if list(map(str, adata.obs_names)) != [str(i) for i in rows["id"]]:
        raise InputError(f"{source}: its cells are not the run's rows (same names, same order); give the run's input")
    whole = explanation_from_rows(rows, settings)
    usable = (rows["status"] == "ok").to_numpy() if "status" in rows else np.ones(len(rows), bool)
    layer = whole.relevance.reindex(columns=list(map(str, adata.var_names)), fill_value=0.0).to_numpy(np.float32)
    layer[~usable] = np.nan
    adata.layers[key] = layer
    ranking = (
        explanation_from_rows(rows[usable].reset_index(drop=True), settings).rank_genes("class", n)
        if usable.any()
        else pd.DataFrame(columns=["group", "rank", "gene", "mean_relevance", "fraction_positive"])
    )
    adata.uns[key] = {
        "composite": whole.composite,
        "rankings": {column: ranking[column].to_numpy() for column in ranking.columns},
    }
    for name, values in (
        ("prediction", whole.prediction),
        ("target", rows["target"]),
        ("explained", whole.explained),
        ("delta", whole.delta),
        ("status", rows.get("status", pd.Series(["ok"] * len(rows)))),
    ):
        adata.obs[f"{key}_{name}"] = np.asarray(values)
    return adata


def gene_report_context(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """For the report of a finished gene run: its ``.h5ad`` input read again (``adata``, for the
    differential-expression comparison) and the label column (``groupby``) when the run had one;
    nothing when the input was a table or is no longer where the run read it."""
    path = Path(str(manifest.get("input", {}).get("path", "")))
    if path.suffix.lower() != ".h5ad" or not path.is_file():
        return {}
    from lrp_domains.bio.cells.readers import read_expression

    column = manifest.get("settings", {}).get("column")
    return {"adata": read_expression(path).data, "groupby": column}


def explanation_from_rows(rows: pd.DataFrame, settings: Mapping[str, Any]) -> GeneExplanation:
    """The :class:`GeneExplanation` of a run's rows (the inverse of :func:`run_rows`): genes and
    classes from the run's settings; the targets count as given when the run had a target or a
    label column."""
    index = pd.Index([str(i) for i in rows["id"]], name=None)
    genes = [str(g) for g in settings["genes"]]
    output = np.stack([np.asarray(v, dtype=np.float64) for v in rows["output"]])
    classes = settings.get("classes") or [str(i) for i in range(output.shape[1])]
    targets = rows["target"]
    given = settings.get("options", {}).get("target") is not None or settings.get("column") is not None
    return GeneExplanation(
        relevance=pd.DataFrame(
            np.stack([np.asarray(v, dtype=np.float64) for v in rows["relevance"]]), index=index, columns=genes
        ),
        output=pd.DataFrame(output, index=index, columns=[str(c) for c in classes]),
        prediction=pd.Series(rows["prediction"].to_numpy(), index=index, name="prediction"),
        target=None if targets.isna().any() else pd.Series(targets.astype(str).to_numpy(), index=index, name="target"),
        explained=pd.Series(rows["explained"].to_numpy(np.float64), index=index, name="explained"),
        delta=pd.Series(rows["delta"].to_numpy(np.float64), index=index, name="delta"),
        composite=str(settings.get("composite", "")),
        target_given=given,
        ledger_rows=LedgerRows.from_json(rows["ledger"]) if "ledger" in rows else None,
    )


def _top(group: str, scores: pd.Series, positive: pd.Series, n: int) -> pd.DataFrame:
    order = scores.sort_values(ascending=False).index[:n]
    return pd.DataFrame(
        {
            "group": group,
            "rank": np.arange(1, len(order) + 1),
            "gene": order,
            "mean_relevance": scores[order].to_numpy(),
            "fraction_positive": positive[order].to_numpy(),
        }
    )


def read_markers(path: str | Path) -> dict[str, list[str]]:
    """Known marker genes from a JSON file ``{"class": ["GENE", ...], ...}``; an InputError naming
    the file and what is wrong otherwise."""
    from lrp_domains.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--markers: no such file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"--markers {path.name}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(g, str) for g in v) for v in data.values()
    ):
        raise InputError(
            f"--markers {path.name}: expected an object mapping each class to a list of gene names, "
            'e.g. {"B cells": ["MS4A1", "CD79A"]}'
        )
    return {str(k): list(v) for k, v in data.items()}
