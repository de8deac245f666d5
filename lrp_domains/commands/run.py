"""``lrp-domains run KIND INPUT --out DIR``: dataset-scale explanation, one command per registered
kind (:mod:`lrp_domains.domains`), and ``run export-modisco``."""

from __future__ import annotations

from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any

import typer

from lrp_domains import domains
from lrp_domains.commands.common import one_line_errors
from lrp_domains.errors import InputError

app = typer.Typer(help="Explain whole files into Parquet shards, resumably, locally or on Ray.", no_args_is_help=True)


class Engine(str, Enum):
    local = "local"
    ray = "ray"


def _options(kind: str, target: str | None, missing: str | None, option: list[str]) -> dict[str, Any]:
    """The run's options from the command line, typed by the explainer that declares them
    (:mod:`lrp_domains.options`): checked before the model loads or the folder is touched."""
    from lrp_domains.options import parse_options

    given: dict[str, Any] = {}
    if target is not None:
        given["target"] = target
    if missing is not None:
        given["missing"] = missing
    for item in option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--option takes KEY=VALUE, got {item!r}")
        given[key.replace("-", "_")] = value
    return parse_options(domains.get(kind), given)


def run_input(kind: str, source: Path | None, regions: Path | None, genome: Path | None, width: int | None) -> Any:
    """The run's input: the file, or (``--regions``) what the domain reads genome windows from."""
    if (source is None) == (regions is None):
        raise InputError(
            "give the input file, or --regions PEAKS with --genome GENOME.fa (one of them)"
            if source is None
            else f"give the input file ({source}) or --regions ({regions}), not both"
        )
    if regions is None:
        if genome is not None or width is not None:
            raise InputError(f"--{'genome' if genome is not None else 'width'} is for --regions (genome windows)")
        return source
    return domains.get(kind).regions_source(regions, genome, width)


def _command(kind: str):
    def command(
        source: Path = typer.Argument(None, help="The input file (or genome regions: --regions and --genome)."),
        out: Path = typer.Option(..., help="Output folder (shards and manifest.json)."),
        regions: Path = typer.Option(
            None,
            help="Genome regions instead of an input file (sequences, dna-lm): BED3, "
            "BED6 or narrowPeak, plain or gzipped; one window per region, centred "
            "on the summit (narrowPeak) or the centre, - strands reverse-"
            "complemented, ids chrom:start-end(strand).",
        ),
        genome: Path = typer.Option(
            None, help="With --regions: the genome FASTA (plain or bgzip; indexed without writing beside it)."
        ),
        width: int = typer.Option(
            None, help="With --regions: window width in bases (default: the model's input length)."
        ),
        model: str = typer.Option(
            None,
            help="The model. text, dna-lm: a folder written by save_pretrained, or a hub "
            "name. sequences, variants: a bpnet-lite BPNet or ChromBPNet saved with "
            "torch.save (.torch or .pt; loaded without running code). genes: a "
            "folder saved by scvi-tools' model.save (a SCANVI). gene-transformer: "
            "a folder of TrainedGeneTransformer.save. Or MODULE:FACTORY (imports "
            "MODULE from the current folder and runs its code): FACTORY() returns "
            "a torch.nn.Module (sequences, variants: one-hot (N, 4, L) in), for "
            "genes a tuple (module, genes, classes) or the module with a JSON file "
            "beside --weights naming genes and classes.",
        ),
        weights: Path = typer.Option(
            None,
            help="Weights for a MODULE:FACTORY model: a .safetensors state dict "
            "(save_file, or save_model for shared weights such as Enformer).",
        ),
        composite: str = typer.Option(None, help="Composite name (default: the domain's)."),
        shard_size: int = typer.Option(1000, help="Rows per output shard."),
        resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip finished shards of a matching run."),
        engine: Engine = typer.Option(Engine.local, help="local, or ray (Ray actors; a lost worker is replaced)."),
        num_workers: int = typer.Option(1, help="Ray actors (one model each)."),
        address: str = typer.Option(
            None, help="Ray cluster to join: HOST:PORT or auto (default: RAY_ADDRESS, else a local cluster)."
        ),
        column: str = typer.Option(
            None,
            help="text: the text column of .csv/.tsv/.jsonl/.parquet (default text); "
            "genes, gene-transformer: a label column (obs or table column) whose "
            "value per sample is the class explained (default: the prediction).",
        ),
        target: str = typer.Option(
            None,
            help="Output to explain: class name or index, a contrast 'A vs B', or the kind's own target text "
            "(sequences: 'counts', 'specific: tracks 3,7 vs rest, bins 400-420'...; default: the prediction).",
        ),
        missing: str = typer.Option(None, help="genes: model genes absent from the data: error, or zero."),
        option: list[str] = typer.Option([], help="Another option of this domain, KEY=VALUE (e.g. center=true)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar (items, items/s, ETA)."),
        device: str = typer.Option(
            "auto",
            help="Where to compute: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N. "
            "Not part of a run's identity: a run resumes on another device.",
        ),
    ) -> None:
        from lrp_domains.run import explain_dataset, read_manifest
        from lrp_domains.run.devices import resolve_device
        from lrp_domains.run.ray_engine import RayWorkersLost

        with one_line_errors():
            options = _options(kind, target, missing, option)
            if weights is not None and model is None:
                raise InputError("--weights needs --model MODULE:FACTORY")
            if address is not None and engine is not Engine.ray:
                raise InputError("--address is for --engine ray")
            # a GPU this machine lacks is refused before the model loads (Ray actors resolve it where they run)
            chosen = resolve_device(device) if engine is Engine.local else None
            factory = partial(
                domains.build_explainer, kind, model, str(weights) if weights else None, composite, device=device
            )
            given = run_input(kind, source, regions, genome, width)
            try:
                manifest = explain_dataset(
                    factory,
                    given,
                    out,
                    shard_size=shard_size,
                    resume=resume,
                    progress=progress,
                    column=column,
                    engine=engine.value,
                    num_workers=num_workers,
                    address=address,
                    **options,
                )
            except RayWorkersLost as error:
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(1) from error
            info = read_manifest(out)
        where = f" on {chosen}" if chosen is not None else ""
        typer.echo(f"{info['input']['rows']} rows in {len(info['shards'])} shards{where}; manifest: {manifest}")

    command.__doc__ = f"Explain every item of a file with the {kind} explainer, into Parquet shards."
    return command


for _kind in domains.kinds():
    app.command(_kind)(_command(_kind))


@app.command("export-modisco")
def export_modisco_command(
    out: Path = typer.Argument(..., help="The output folder of a finished sequence run."),
    prefix: str = typer.Option(None, help="Path prefix of the two files (default: OUT/)."),
) -> None:
    """Write OUT/ohe.npy and OUT/attr.npy (N x 4 x L) for `modisco motifs -s ohe.npy -a attr.npy`, shard by shard."""
    from lrp_domains.run import export_modisco

    with one_line_errors():
        paths = export_modisco(out, prefix)
    import numpy as np

    length = np.load(paths[0], mmap_mode="r").shape[2]  # modisco's window (-w, default 400) must fit the windows
    typer.echo(
        f"ohe: {paths[0]}\nattr: {paths[1]}\nnext: modisco motifs -s {paths[0]} -a {paths[1]} -n 2000 "
        f"-w {length} -o modisco.h5"
    )


@app.command("reference-examples")
def reference_examples_command(
    out: Path = typer.Argument(..., help="The output folder of a run made with --option concepts=LAYER."),
    top: int = typer.Option(5, help="Records per concept."),
    table: Path = typer.Option(None, help="Where to write the table (default: OUT/reference_examples.tsv)."),
) -> None:
    """Per concept (a channel of the run's layer), the records where it receives the most relevance
    (CRP's relevance maximization), with its share of all relevance, read shard by shard."""
    from lrp_domains.files.writing import atomic_write
    from lrp_domains.run import reference_examples
    from lrp_domains.run.manifest import step_output

    with one_line_errors():
        path = table or Path(out) / "reference_examples.tsv"
        if path.is_dir():
            raise InputError(f"--table {path} is a folder; give a file name (e.g. {path / 'reference_examples.tsv'})")
        found = reference_examples(out, top=top)
        with step_output(out, path) as target:
            atomic_write(target, found.to_csv(sep="\t", index=False))
    typer.echo(f"reference examples: {path} ({found.concept.nunique()} concepts, top {top})")
