"""``lrp-domains bio genes|sequences``: explain expression and sequence models into reports.

Every option is checked before anything is explained (missing files, unknown JASPAR releases,
broken marker JSON, weights without a model), and every problem ends as one ``error: ...`` line.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from lrp_domains.commands.common import one_line_errors
from lrp_domains.errors import InputError
from lrp_domains.files.writing import claim_folder

app = typer.Typer(
    help="Explain biological models: gene expression (genes), DNA sequences (sequences).", no_args_is_help=True
)

MODEL_HELP = (
    "The model: MODULE:FACTORY, FACTORY() returning a torch.nn.Module that takes one-hot sequences "
    "(N, 4, L) (bpnet-lite, Enformer and Borzoi models are recognised as they are), its weights from "
    "--weights; imports MODULE (from the current folder too) and runs its code. Or a bpnet-lite BPNet or "
    "ChromBPNet saved with torch.save (model.torch or .pt; it holds its weights; loaded without running "
    "code: a file holding any other class is refused). Default: the bundled model."
)
WEIGHTS_HELP = (
    "Weights for a MODULE:FACTORY model, as a .safetensors state dict (safetensors.torch.save_file, or "
    "save_model for models with shared weights such as Enformer)."
)
GENES_MODEL_HELP = (
    "The model: a folder saved by scvi-tools' model.save (a SCANVI: its cell-type classifier, counts "
    "in; read without running pickled code, never written to); or MODULE:FACTORY, FACTORY() "
    "returning a tuple (module, genes, classes): a "
    "torch.nn.Module mapping expression (samples x genes) to class scores, its input genes and its "
    "class names; or the module alone, genes and classes then named by a JSON file beside --weights "
    "(same name, .json: genes, classes), else genes are the data's columns in order. Imports MODULE "
    "(from the current folder too) and runs its code (default: the bundled model)."
)
NOISY_LABELS = (
    "pbmc68k_reduced bulk_labels are noisy: the 'Dendritic' cluster also carries classical-monocyte "
    "markers (LYZ, S100A8/9), so its top genes overlap the monocytes'."
)


#: Where a convenience command (bio sequences, bio genes) keeps its run, inside its report folder.
RUN_FOLDER = "run"
#: The files of a sequence report that every report writes (claimed before the work starts).
SEQUENCE_REPORT_FILES = ["report.html", "relevance.parquet", "seqlets.csv", "seqlets.bed", "per_position.tsv"]


class Missing(str, Enum):
    error = "error"
    zero = "zero"


@app.command("genes")
def genes_command(
    data: Path = typer.Argument(None, help=".h5ad or .csv/.tsv (samples x genes); default: the PBMC data."),
    out: Path = typer.Option(..., help="Output folder."),
    model: str = typer.Option(None, help=GENES_MODEL_HELP),
    weights: Path = typer.Option(
        None,
        help="Weights for --model (.safetensors; a JSON file beside it, same name with "
        ".json, may name genes and classes).",
    ),
    label_column: str = typer.Option(None, help="Labels to explain (obs column or CSV column); default: predictions."),
    markers: Path = typer.Option(None, help="JSON mapping each class to its marker genes."),
    composite: str = typer.Option("epsilon", help="Composite name (see the README for why epsilon)."),
    top: int = typer.Option(50, help="Genes per class in the rankings."),
    missing: Missing = typer.Option(Missing.error, help="Model genes absent from the data: error, or zero-fill."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    resume: bool = typer.Option(
        True,
        "--resume/--no-resume",
        help="Reuse the finished shards of OUT/run when "
        "input and settings are the same (a run of others "
        "there is replaced); --no-resume: always replace.",
    ),
) -> None:
    """Gene relevance per sample and per class, with figures, marker and DE tables, and an HTML report:
    a run into OUT/run (as `lrp-domains run genes`, the same rows), then its report into OUT."""
    from lrp_domains.bio import ExpressionExplainer
    from lrp_domains.bio.cells.genes import read_markers
    from lrp_domains.bio.cells.readers import cells_reader
    from lrp_domains.bio.cells.scvi_models import is_model_folder
    from lrp_domains.models import load_user_model
    from lrp_domains.report.runs import report_run
    from lrp_domains.run import explain_dataset

    notes: list[str] = []
    with one_line_errors():
        if weights is not None and model is None:
            raise InputError("--weights needs --model MODULE:FACTORY (the default model has its own weights)")
        if model is not None and data is None:
            raise InputError("give DATA (an .h5ad or .csv/.tsv file) when using --model")
        marker_sets = read_markers(markers) if markers is not None else None
        if data is None:
            from lrp_domains.bio.cells.pbmc_mlp import default_data_path

            data, label_column = default_data_path(), label_column or "bulk_labels"
            notes.append(NOISY_LABELS)
        reader = cells_reader(data, label_column)  # a missing file or label column is named before the model loads
        if getattr(reader, "ignored", None):
            notes.append(f"Columns that are not numbers were ignored (not genes): {', '.join(reader.ignored)}.")
        if model is None:
            from lrp_domains.bio.cells.pbmc_mlp import PBMC_MARKERS

            explainer = ExpressionExplainer.default(composite=composite)
            # all known markers: the report names those the model lacks (CD14, ...) instead of dropping them unsaid
            marker_sets = marker_sets or PBMC_MARKERS
        elif is_model_folder(model):  # a model folder (scvi-tools model.save), or its model.pt
            explainer = ExpressionExplainer.from_options(model, str(weights) if weights else None, composite)
        else:
            net, genes, classes = load_user_model(model, weights)
            explainer = ExpressionExplainer(
                net, genes if genes is not None else reader.genes, classes, composite=composite
            )
        with claim_folder(out, "gene-report", ["report.html", "relevance.parquet"]):
            explain_dataset(
                explainer,
                data,
                out / RUN_FOLDER,
                column=label_column,
                missing=missing.value,
                resume=resume,
                progress=progress,
                replace_other=True,
                ledger=True,
            )
            # (an .h5ad input is read again for the differential-expression comparison: report_context)
            written = report_run(out / RUN_FOLDER, out, markers=marker_sets, top=top, notes=notes)
    for name, path in written.items():
        typer.echo(f"{name}: {path}")
    typer.echo(f"run: {out / RUN_FOLDER}")


@app.command("sequences")
def sequences_command(
    path: Path = typer.Argument(
        None, help="FASTA (.fa, .fasta, .fna, plain or gzipped); default: datasets/example_sequences.fa."
    ),
    out: Path = typer.Option(..., help="Output folder."),
    model: str = typer.Option(None, help=MODEL_HELP),
    weights: Path = typer.Option(None, help=WEIGHTS_HELP),
    target: str = typer.Option(
        None,
        help="What to explain: an output index (default: the prediction / the only "
        "output), 'profile' (BPNet profile head, softmax-weighted; 'profile:S' one "
        "strand), 'counts', 'track=12:400-420' / 'track 12, bins 400-420' "
        "(bins end excluded), 'specific: tracks 3,7 vs rest, bins 400-420' (their mean minus the "
        "others'), or '1 vs 0' (one output minus another), optionally followed by head=H.",
    ),
    center: bool = typer.Option(False, "--center", help="Off-simplex correction (Majdandzic et al. 2023)."),
    rc_average: bool = typer.Option(False, "--rc-average", help="Average with the reverse complement."),
    composite: str = typer.Option("genomics", help="Composite name."),
    motifs: str = typer.Option("JASPAR2024", help="JASPAR release, a JASPAR/MEME file, or 'none'."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    resume: bool = typer.Option(
        True,
        "--resume/--no-resume",
        help="Reuse the finished shards of OUT/run when "
        "input and settings are the same (a run of others "
        "there is replaced); --no-resume: always replace.",
    ),
    regions: Path = typer.Option(
        None,
        help="Genome regions instead of a FASTA: BED3, BED6 or narrowPeak (windows "
        "centred on the summit or centre; minus strands reverse-complemented).",
    ),
    genome: Path = typer.Option(None, help="With --regions: the genome FASTA (indexed without writing beside it)."),
    width: int = typer.Option(None, help="With --regions: window width (default: the model's input length)."),
) -> None:
    """Nucleotide relevance, seqlets with JASPAR matches, logos, modisco inputs, and an HTML report:
    a run into OUT/run (as `lrp-domains run sequences`, the same rows), then its report into OUT."""
    from functools import partial

    from lrp_domains.bio.motifs.seqlets import load_motifs
    from lrp_domains.bio.sequences.targets import parse_sequence_target
    from lrp_domains.commands.run import run_input
    from lrp_domains.domains import build_explainer
    from lrp_domains.files.fasta import FastaRecords, check_unique
    from lrp_domains.report.runs import report_run
    from lrp_domains.run import explain_dataset

    with one_line_errors():
        library = None if motifs.lower() == "none" else load_motifs(motifs)
        if path is None and regions is None:
            from lrp_domains.data import datasets_dir

            path = datasets_dir() / "example_sequences.fa"
        source = run_input("sequences", path, regions, genome, width)
        if regions is None:
            records = FastaRecords(path)  # a missing file or an unknown type is named before the model loads
            # The report names records by id: they must be unique (a run alone allows repeats).
            check_unique([name for shard in records.shards(4096) for name in records.read(shard)[0]], path.name)
        parse_sequence_target(target)  # a bad --target is named before the model loads
        factory = partial(build_explainer, "sequences", model, str(weights) if weights else None, composite)
        options = {"target": target, "center": center, "rc_average": rc_average, "ledger": True}
        with claim_folder(out, "sequence-report", SEQUENCE_REPORT_FILES):
            explain_dataset(
                factory, source, out / RUN_FOLDER, resume=resume, progress=progress, replace_other=True, **options
            )
            written = report_run(out / RUN_FOLDER, out, motifs=library)
    for name, written_path in written.items():
        typer.echo(f"{name}: {written_path}")
    typer.echo(f"run: {out / RUN_FOLDER}")


@app.command("concepts")
def concepts_command(
    path: Path = typer.Argument(..., help="FASTA of sequences of one length (plain or gzipped)."),
    out: Path = typer.Option(..., help="Output folder."),
    layer: str = typer.Option(None, help="Convolution layer (a name from model.named_modules()); default: the first."),
    model: str = typer.Option(None, help=MODEL_HELP),
    weights: Path = typer.Option(None, help=WEIGHTS_HELP),
    target: int = typer.Option(None, help="Output index to explain (default: the prediction / the only output)."),
    top: int = typer.Option(10, help="Filters to describe (largest relevance share first)."),
    composite: str = typer.Option("genomics", help="Composite name."),
    motifs: str = typer.Option("JASPAR2024", help="JASPAR release, a JASPAR/MEME file, or 'none'."),
    examples: int = typer.Option(5, help="Reference sequences per filter (largest filter relevance)."),
    batch_size: int = typer.Option(64, help="Sequences per forward/backward pass."),
) -> None:
    """What the filters of a convolution layer carry: relevance share, conditional seqlets, CWM,
    best JASPAR match, logo and reference sequences per filter (Concept Relevance Propagation)."""
    from lrp_domains.bio import SequenceExplainer
    from lrp_domains.bio.concepts.filters import explain_filters
    from lrp_domains.bio.motifs.seqlets import load_motifs
    from lrp_domains.files.fasta import FastaRecords
    from lrp_domains.report.concepts import write_concepts_report

    with one_line_errors():
        if top < 1 or examples < 0 or batch_size < 1:
            raise InputError("--top and --batch-size must be >= 1, --examples >= 0")
        library = None if motifs.lower() == "none" else load_motifs(motifs)
        FastaRecords(path)  # a missing file or an unknown type is named before the model loads
        explainer = SequenceExplainer.from_options(model, str(weights) if weights else None, composite)
        with claim_folder(out, "concepts-report", ["report.html"]):
            concepts = explain_filters(
                explainer,
                path,
                layer=layer,
                target=target,
                top=top,
                motifs=library,
                examples=examples,
                batch_size=batch_size,
            )
            written = write_concepts_report(concepts, out)
    for name, written_path in written.items():
        typer.echo(f"{name}: {written_path}")


@app.command("variants")
def variants_command(
    vcf: Path = typer.Option(..., help="Variants (.vcf or .vcf.gz)."),
    fasta: Path = typer.Option(..., help="The reference genome (FASTA, plain or bgzip; indexed with pyfaidx)."),
    out: Path = typer.Option(..., help="Output folder (variants.tsv)."),
    model: str = typer.Option(None, help=MODEL_HELP),
    weights: Path = typer.Option(None, help=WEIGHTS_HELP),
    window: int = typer.Option(
        None, help="Bases per window (default: the model's training length, 200 for the default CNN)."
    ),
    target: int = typer.Option(None, help="Output index to explain (default: the prediction / the only output)."),
    composite: str = typer.Option("genomics", help="Composite name."),
    batch_size: int = typer.Option(64, help="Variants per batch (each explains two windows)."),
    motifs: str = typer.Option(
        "JASPAR2024",
        help="Motif library naming the motif lost or gained at each variant "
        "(a JASPAR release, a JASPAR/MEME file, or 'none').",
    ),
    report: bool = typer.Option(True, help="Write report.html: the top variants as two-row logos."),
    top: int = typer.Option(10, help="Variants shown in the report."),
    bigwig: bool = typer.Option(
        False,
        help="Write delta_relevance.bw: each variant's per-base relevance change "
        "(alternative minus reference) in genome coordinates.",
    ),
    resume: bool = typer.Option(
        True,
        "--resume/--no-resume",
        help="Reuse the finished shards of OUT/run when "
        "input and settings are the same (a run of others "
        "there is replaced); --no-resume: always replace.",
    ),
) -> None:
    """Each variant's effect: the reference and alternative windows explained, the change in the
    prediction and in the relevance of the variant's own bases, and the motif lost or gained at the
    variant, one row per allele in variants.tsv, largest effect first (rows that cannot be
    explained carry a status); report.html with two-row logos of the top variants."""
    import warnings
    from functools import partial

    from lrp_domains.bio.sequences.genome import genome_sizes
    from lrp_domains.bio.variants.effects import VariantWarning, sort_by_effect
    from lrp_domains.bio.variants.explainer import variants_table
    from lrp_domains.domains import build_explainer
    from lrp_domains.files.writing import OutputFolder
    from lrp_domains.run import explain_dataset, read_results

    with one_line_errors():
        if not vcf.is_file():
            raise InputError(f"--vcf {vcf}: no such file")
        if not fasta.is_file():
            raise InputError(f"--fasta {fasta}: no such file")
        if batch_size < 1 or (window is not None and window < 1) or top < 0:
            raise InputError("--batch-size and --window must be >= 1, --top >= 0")
        library = None if motifs.lower() == "none" else motifs
        if library is not None:
            from lrp_domains.bio.motifs.seqlets import load_motifs

            load_motifs(library)  # a bad library is named before any variant is explained
        factory = partial(build_explainer, "variants", model, str(weights) if weights else None, composite)
        folder = OutputFolder(out, "variants")  # locked, and checked for what is not ours, before the work
        folder.expect(["variants.tsv", "report.html"])
        options = {
            "fasta": str(fasta),
            "window": window,
            "target": target,
            "batch_size": batch_size,
            "motifs": library or "none",
            "delta_tracks": bigwig,
        }
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", VariantWarning)
            explain_dataset(
                factory, vcf, out / RUN_FOLDER, progress=False, resume=resume, replace_other=True, **options
            )
        said: set[str] = set()
        for caught_warning in caught:  # ours as one line each (once); any other warning as Python shows it
            if issubclass(caught_warning.category, VariantWarning):
                if str(caught_warning.message) not in said:
                    typer.echo(f"warning: {caught_warning.message}", err=True)
                    said.add(str(caught_warning.message))
            else:
                warnings.warn_explicit(
                    caught_warning.message, caught_warning.category, caught_warning.filename, caught_warning.lineno
                )
        # The steps on the finished run: the table (largest effect first), the track, the report.
        table = sort_by_effect(variants_table(read_results(out / RUN_FOLDER)))
        shown = table.drop(columns=["delta_track"], errors="ignore")
        path = folder.write_text("variants.tsv", shown.to_csv(sep="\t", index=False, float_format="%.6g"))
        if bigwig and (table["status"] == "ok").any():
            from lrp_domains.bio.variants.effects import variants_to_bigwig

            with folder.atomic("delta_relevance.bw") as temporary:
                variants_to_bigwig(table, temporary, genome_sizes(fasta))
        elif bigwig:
            typer.echo(
                "warning: delta_relevance.bw is not written: no variant was explained (no row has status ok; "
                "see the status column of variants.tsv)",
                err=True,
            )
        if report:
            from lrp_domains.report.variants import write_variant_report

            explainer = factory().sequences
            write_variant_report(explainer, table, fasta, out, top=top, window=window, target=target, folder=folder)
        folder.finish()
    counts = table["status"].value_counts().to_dict()
    typer.echo(f"variants: {path} ({len(table)} rows; " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")")
    typer.echo(f"run: {out / RUN_FOLDER}")
