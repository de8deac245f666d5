"""``lrp-domains bio ...``: explain expression models (and, later, sequence models)."""

from __future__ import annotations

import importlib
import json
from enum import Enum
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Explain biological models: gene expression (genes), DNA sequences (sequences).",
                  no_args_is_help=True)


def load_user_model(spec: str, weights: Path | None) -> tuple[Any, list[str] | None, list[str] | None]:
    """``MODULE:FACTORY`` -> (model, genes, classes). The factory returns a module or a tuple
    ``(module, genes, classes)``; ``weights`` (safetensors) are loaded into it, and a JSON sidecar
    with the same stem may name ``genes`` and ``classes``."""
    from safetensors.torch import load_file

    module_name, _, factory_name = spec.partition(":")
    if not factory_name:
        raise typer.BadParameter(f"--model must be MODULE:FACTORY, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as error:
        raise typer.BadParameter(f"cannot load {spec!r}: {error}") from error
    built = factory()
    model, genes, classes = built if isinstance(built, tuple) else (built, None, None)
    if weights is not None:
        if weights.suffix != ".safetensors":
            raise typer.BadParameter("--weights must be a .safetensors file (pickled checkpoints are not loaded)")
        model.load_state_dict(load_file(str(weights)))
        sidecar = weights.with_suffix(".json")
        if sidecar.exists():
            meta = json.loads(sidecar.read_text())
            genes, classes = meta.get("genes", genes), meta.get("classes", classes)
    return model.eval(), genes, classes


def _read_data(path: Path, label_column: str | None):
    """AnnData from ``.h5ad``; from ``.csv``/``.tsv`` a DataFrame (first column: sample names)."""
    import pandas as pd

    if path.suffix == ".h5ad":
        import anndata

        return anndata.read_h5ad(path), None
    if path.suffix in (".csv", ".tsv"):
        frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index_col=0)
        labels = None
        if label_column is not None:
            if label_column not in frame.columns:
                raise typer.BadParameter(f"{path.name} has no column {label_column!r}")
            labels = frame.pop(label_column).astype(str)
        return frame, labels
    raise typer.BadParameter(f"{path.name}: use an .h5ad, .csv or .tsv file")


class Missing(str, Enum):
    error = "error"
    zero = "zero"


@app.command("genes")
def genes_command(
    data: Path = typer.Argument(None, help=".h5ad or .csv/.tsv (samples x genes); default: the PBMC data."),
    out: Path = typer.Option(..., help="Output folder."),
    model: str = typer.Option(None, help="MODULE:FACTORY building the model (default: the bundled PBMC MLP)."),
    weights: Path = typer.Option(None, help="Weights for --model (.safetensors; a .json beside it may name genes)."),
    label_column: str = typer.Option(None, help="Labels to explain (obs column or CSV column); default: predictions."),
    markers: Path = typer.Option(None, help="JSON mapping each class to its marker genes."),
    composite: str = typer.Option("epsilon", help="Composite name (see the README for why epsilon)."),
    top: int = typer.Option(50, help="Genes per class in the rankings."),
    missing: Missing = typer.Option(Missing.error, help="Model genes absent from the data: error, or zero-fill."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Gene relevance per sample and per class, with figures, marker and DE tables, and an HTML report."""
    from lrp_domains.bio import ExpressionExplainer
    from lrp_domains.report.genes import write_gene_report

    notes: list[str] = []
    marker_sets = json.loads(markers.read_text()) if markers is not None else None
    if model is None:
        from lrp_domains.bio.default_model import load_default_data, load_default_model, markers_in

        net, genes, classes = load_default_model()
        adata = load_default_data() if data is None else _read_data(data, label_column)[0]
        label_column = label_column or ("bulk_labels" if data is None else None)
        marker_sets = marker_sets or markers_in(genes)
        if data is None:
            notes.append("pbmc68k_reduced bulk_labels are noisy: the 'Dendritic' cluster also carries classical-"
                         "monocyte markers (LYZ, S100A8/9), so its top genes overlap the monocytes'.")
    else:
        if data is None:
            raise typer.BadParameter("give DATA when using --model")
        net, genes, classes = load_user_model(model, weights)
        adata = None
    explainer_data, labels = (adata, None) if adata is not None else _read_data(data, label_column)
    if genes is None:
        genes = list(map(str, getattr(explainer_data, "var_names", getattr(explainer_data, "columns", []))))
    explainer = ExpressionExplainer(net, genes, classes, composite=composite)
    target = None
    if label_column is not None and adata is not None:
        if label_column not in adata.obs:
            raise typer.BadParameter(f"no column {label_column!r} in the data's obs: {list(adata.obs.columns)}")
        target = adata.obs[label_column].astype(str).tolist()
    elif labels is not None:
        target = labels.tolist()
    try:
        explanation = explainer.explain(explainer_data, target=target, progress=progress, missing=missing.value)
    except (ValueError, KeyError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    written = write_gene_report(explanation, out, markers=marker_sets, adata=adata,
                                groupby=label_column if adata is not None else None, top=top, notes=notes)
    for name, path in written.items():
        typer.echo(f"{name}: {path}")


@app.command("sequences")
def sequences_command(
    path: Path = typer.Argument(None, help="FASTA (.fa, .fasta, .gz); default: datasets/example_sequences.fa."),
    out: Path = typer.Option(..., help="Output folder."),
    model: str = typer.Option(None, help="MODULE:FACTORY building the model (default: the bundled synthetic CNN)."),
    weights: Path = typer.Option(None, help="Weights for --model (.safetensors)."),
    target: int = typer.Option(None, help="Output index to explain (default: the prediction / the only output)."),
    center: bool = typer.Option(False, "--center", help="Off-simplex correction (Majdandzic et al. 2023)."),
    rc_average: bool = typer.Option(False, "--rc-average", help="Average with the reverse complement."),
    composite: str = typer.Option("genomics", help="Composite name."),
    motifs: str = typer.Option("JASPAR2024", help="JASPAR release, a JASPAR/MEME file, or 'none'."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Nucleotide relevance, seqlets with JASPAR matches, logos, modisco inputs, and an HTML report."""
    from lrp_domains.bio import SequenceExplainer, annotate_seqlets, call_seqlets
    from lrp_domains.report.sequences import write_sequence_report

    if model is None:
        from lrp_domains.bio.sequence_model import load_default_sequence_model

        net = load_default_sequence_model()
    else:
        net, _, _ = load_user_model(model, weights)
    if path is None:
        from lrp_domains.data import datasets_dir

        path = datasets_dir() / "example_sequences.fa"
    explainer = SequenceExplainer(net, composite=composite)
    try:
        explanation = explainer.explain(path, target=target, center=center, rc_average=rc_average, progress=progress)
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    seqlets = call_seqlets(explanation)
    if motifs.lower() != "none" and len(seqlets):
        seqlets = annotate_seqlets(seqlets, motifs=motifs)
    written = write_sequence_report(explanation, out, seqlets)
    for name, written_path in written.items():
        typer.echo(f"{name}: {written_path}")
