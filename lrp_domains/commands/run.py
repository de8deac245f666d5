"""``lrp-domains run text|sequences|genes INPUT --out DIR``: dataset-scale explanation."""

from __future__ import annotations

from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any

import typer

from lrp_domains.commands.bio import Missing

app = typer.Typer(help="Explain whole files into Parquet shards, resumably, locally or on Ray.", no_args_is_help=True)


class Engine(str, Enum):
    local = "local"
    ray = "ray"


def build_explainer(kind: str, model: str | None = None, weights: str | None = None,
                    composite: str | None = None) -> Any:
    """The explainer for a run (module-level, so Ray workers can rebuild it from its arguments)."""
    if kind == "text":
        from lrp_domains.text import TextExplainer

        if model is None:
            return TextExplainer.default(composite=composite or "attnlrp")
        return TextExplainer.from_pretrained(model, composite=composite or "attnlrp")
    if kind == "sequences":
        from lrp_domains.bio import SequenceExplainer

        if model is None:
            return SequenceExplainer.default(composite=composite or "genomics")
        from lrp_domains.commands.bio import load_user_model

        net, _, _ = load_user_model(model, Path(weights) if weights else None)
        return SequenceExplainer(net, composite=composite or "genomics")
    from lrp_domains.bio import ExpressionExplainer

    if model is None:
        return ExpressionExplainer.default(composite=composite or "epsilon")
    from lrp_domains.commands.bio import load_user_model

    net, genes, classes = load_user_model(model, Path(weights) if weights else None)
    if genes is None:
        raise typer.BadParameter("for genes, the factory must return (model, genes, classes) or the weights need a "
                                 ".json sidecar naming the genes")
    return ExpressionExplainer(net, genes, classes, composite=composite or "epsilon")


def _run(kind: str, source: Path, out: Path, model: str | None, weights: Path | None, composite: str | None,
         shard_size: int, resume: bool, engine: Engine, num_workers: int, column: str, progress: bool,
         target: str | None, missing: str = "error") -> None:
    from lrp_domains.run import explain_dataset, read_manifest

    factory = partial(build_explainer, kind, model, str(weights) if weights else None, composite)
    options: dict[str, Any] = {}
    if missing != "error":
        if kind != "genes":
            raise typer.BadParameter("--missing applies to genes only")
        options["missing"] = missing
    if target is not None:
        options["target"] = int(target) if target.lstrip("-").isdigit() else target
    try:
        manifest = explain_dataset(factory, source, out, shard_size=shard_size, resume=resume, progress=progress,
                                   column=column, engine=engine.value, num_workers=num_workers, **options)
    except (ValueError, FileNotFoundError, TypeError, ImportError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    info = read_manifest(out)
    typer.echo(f"{info['input']['rows']} rows in {len(info['shards'])} shards; manifest: {manifest}")


def _command(kind: str):
    def command(
        source: Path = typer.Argument(..., help="The input file."),
        out: Path = typer.Option(..., help="Output folder (shards and manifest.json)."),
        model: str = typer.Option(None, help="Model: a folder or hub name (text) or MODULE:FACTORY (bio)."),
        weights: Path = typer.Option(None, help="Weights for a MODULE:FACTORY model (.safetensors)."),
        composite: str = typer.Option(None, help="Composite name (default: the domain's)."),
        shard_size: int = typer.Option(1000, help="Rows per output shard."),
        resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip finished shards of a matching run."),
        engine: Engine = typer.Option(Engine.local, help="local, or ray (Ray Data actors)."),
        num_workers: int = typer.Option(1, help="Ray actors (one model each)."),
        column: str = typer.Option("text", help="Text column (.csv/.tsv/.jsonl/.parquet)."),
        target: str = typer.Option(None, help="Output to explain: class name or index (default: the prediction)."),
        missing: Missing = typer.Option(Missing.error, help="genes: model genes absent from the data: error, or "
                                                            "zero-fill."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar (items, items/s, ETA)."),
    ) -> None:
        _run(kind, source, out, model, weights, composite, shard_size, resume, engine, num_workers, column, progress,
             target, missing.value)

    command.__doc__ = f"Explain every {'text' if kind == 'text' else 'record' if kind == 'sequences' else 'cell'} " \
                      f"of a file into Parquet shards."
    return command


app.command("text")(_command("text"))
app.command("sequences")(_command("sequences"))
app.command("genes")(_command("genes"))


@app.command("export-modisco")
def export_modisco_command(
    out: Path = typer.Argument(..., help="The output folder of a finished `run sequences`."),
    prefix: str = typer.Option(None, help="Path prefix of the two files (default: OUT/)."),
) -> None:
    """Write OUT/ohe.npy and OUT/attr.npy (N x 4 x L) for `modisco motifs -s ohe.npy -a attr.npy`, shard by shard."""
    from lrp_domains.run import export_modisco

    try:
        paths = export_modisco(out, prefix)
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    import numpy as np

    length = np.load(paths[0], mmap_mode="r").shape[2]  # modisco's window (-w, default 400) must fit the windows
    typer.echo(f"ohe: {paths[0]}\nattr: {paths[1]}\nnext: modisco motifs -s {paths[0]} -a {paths[1]} -n 2000 "
               f"-w {length} -o modisco.h5")
