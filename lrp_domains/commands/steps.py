"""``lrp-domains run STEP RUN_FOLDER``: what a user takes away from a finished run, read from its
shards (the report, seqlets, tracks); each step is a function of the library, called here."""

from __future__ import annotations

from pathlib import Path

import typer

from lrp_domains.commands.common import one_line_errors
from lrp_domains.commands.run import app
from lrp_domains.errors import InputError

__all__ = ["app"]


@app.command("bigwig")
def bigwig_command(
    run_dir: Path = typer.Argument(..., help="The folder of a finished sequences or dna-lm run."),
    out: Path = typer.Option(..., help="The bigWig file to write (e.g. relevance.bw)."),
    genome: Path = typer.Option(
        None, help="The genome FASTA, for its chromosome sizes (default: the genome of a run made with --regions)."
    ),
    chrom_sizes: Path = typer.Option(None, help="Chromosome sizes instead: a chrom.sizes file or a .fai index."),
) -> None:
    """Per-base relevance of the observed bases as a bigWig: overlapping windows averaged, minus
    strands mapped back, rows whose status is not ok left out (the run's ids place the windows)."""
    from lrp_domains.bio.sequences.tracks import run_to_bigwig
    from lrp_domains.run.manifest import step_output

    with one_line_errors():
        if genome is not None and chrom_sizes is not None:
            raise InputError("give --genome or --chrom-sizes, not both")
        sizes = None
        if genome is not None:
            from lrp_domains.bio.sequences.genome import genome_sizes

            sizes = genome_sizes(genome)
        elif chrom_sizes is not None:
            sizes = chrom_sizes
        with step_output(run_dir, out) as target:
            run_to_bigwig(run_dir, target, sizes)
    typer.echo(f"bigWig: {out}")


@app.command("seqlets")
def seqlets_command(
    run_dir: Path = typer.Argument(..., help="The folder of a finished sequences or dna-lm run."),
    out: Path = typer.Option(..., help="The BED file to write (e.g. seqlets.bed)."),
    motifs: str = typer.Option(
        "none",
        help="Name each seqlet by its best match: a JASPAR release (JASPAR2024, "
        "offline), a JASPAR or MEME file, or none.",
    ),
    alpha: float = typer.Option(0.01, help="The null's tail probability (seqlet threshold)."),
) -> None:
    """Seqlets over the whole run (one null pooled over every record), as BED6: genome coordinates
    when the ids are regions (--regions runs), else within each record (chrom = the record id)."""
    from lrp_domains.bio.motifs.run_seqlets import ids_are_regions, run_seqlets, write_seqlets_bed
    from lrp_domains.bio.sequences.tracks import run_genome_sizes
    from lrp_domains.run.manifest import finished_run, step_output

    with one_line_errors():
        manifest, files = finished_run(run_dir, "seqlets")
        import pyarrow.parquet as pq

        ids = [
            name
            for path in files
            for name, status in zip(*pq.read_table(path, columns=["id", "status"]).to_pydict().values())
            if status == "ok"
        ]
        seqlets = run_seqlets(run_dir, motifs=motifs, alpha=alpha)
        genome = ids_are_regions(ids)
        with step_output(run_dir, out) as target:
            write_seqlets_bed(seqlets, target, chrom_sizes=run_genome_sizes(manifest), coordinates=genome)
    where = "genome coordinates" if genome else "record coordinates (the ids carry no genome coordinates)"
    typer.echo(f"seqlets: {out} ({len(seqlets)} seqlets, {where})")


@app.command("report")
def report_command(
    run_dir: Path = typer.Argument(
        ..., help="The folder of a finished run (a kind with a report: sequences, genes, gene-transformer, text...)."
    ),
    out: Path = typer.Option(..., help="The report folder (another folder than the run's)."),
    motifs: str = typer.Option(
        None, help="sequences: name seqlets by their best JASPAR match (a release, a JASPAR/MEME file, or none)."
    ),
    markers: Path = typer.Option(None, help="genes: JSON mapping each class to its marker genes."),
    top: int = typer.Option(None, help="genes: genes per class in the rankings."),
) -> None:
    """The run's report (the same pages `bio sequences`, `bio genes` and `text explain-file` write),
    rebuilt from the run's rows; rows whose status is not ok are left out and named."""
    from lrp_domains.report.runs import report_run

    with one_line_errors():
        kwargs: dict = {}
        if motifs is not None and motifs.lower() != "none":
            from lrp_domains.bio.motifs.seqlets import load_motifs

            kwargs["motifs"] = load_motifs(motifs)
        if markers is not None:
            from lrp_domains.bio.cells.genes import read_markers

            kwargs["markers"] = read_markers(markers)
        if top is not None:
            kwargs["top"] = top
        written = report_run(run_dir, out, **kwargs)
    for name, path in written.items():
        typer.echo(f"{name}: {path}")


@app.command("h5ad")
def h5ad_command(
    run_dir: Path = typer.Argument(..., help="The folder of a finished genes or gene-transformer run."),
    out: Path = typer.Option(..., help="The .h5ad file to write (e.g. explained.h5ad)."),
    data: Path = typer.Option(None, help="The run's input (default: the file the run read)."),
    key: str = typer.Option("lrp", help="Layer and uns key of the relevance."),
) -> None:
    """The run's input as AnnData with the gene relevance in layers[KEY], the per-class rankings in
    uns[KEY] and each cell's prediction, target, explained value, delta and status in obs."""
    from lrp_domains.bio.cells.genes import run_to_anndata
    from lrp_domains.run.manifest import step_output

    with one_line_errors():
        if not out.name.endswith(".h5ad"):
            raise InputError(f"--out {out}: give a .h5ad file name")
        adata = run_to_anndata(run_dir, data, key=key)
        with step_output(run_dir, out) as target:
            from lrp_domains.files.writing import atomic_path

            with atomic_path(target) as temporary:
                adata.write_h5ad(temporary)
    typer.echo(f"h5ad: {out} ({adata.n_obs} cells, layer {key!r})")
