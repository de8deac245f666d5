"""The ``lrp-domains`` command."""

from __future__ import annotations

import os
from pathlib import Path

import typer

# Idle OpenMP threads sleep instead of spinning (unless the user chose otherwise): on a busy or
# small machine spinning threads made one explained sentence take seconds instead of milliseconds.
# Set before torch is imported (commands import it when they run).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(help="Layer-wise Relevance Propagation for text and biology.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print ratios measured in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _add_text_commands() -> None:
    try:
        from lrp_domains.commands.text import app as text_app
    except ImportError:  # the text extra is not installed
        return
    app.add_typer(text_app, name="text")


def _add_bio_commands() -> None:
    try:
        from lrp_domains.commands.bio import app as bio_app
    except ImportError:  # the bio extra is not installed
        return
    app.add_typer(bio_app, name="bio")


def _add_run_commands() -> None:
    from lrp_domains.commands.steps import app as run_app  # the run group, with the steps on finished runs

    app.add_typer(run_app, name="run")


_add_text_commands()
_add_bio_commands()
_add_run_commands()


@app.command()
def demo(
    out: Path = typer.Option(Path("lrp-demo"), help="Output folder (index.html and the three reports)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    core: bool = typer.Option(False, "--core", help="Only the core example: a small MLP, tables in the terminal."),
) -> None:
    """The demo: text, sequences and genes explained by the default models, in one folder to open."""
    if core:
        from lrp_domains.core_example import run_core_demo

        run_core_demo(progress=progress)
        return
    from lrp_domains.demo import run_demo

    run_demo(out, progress=progress)


@app.command()
def composites() -> None:
    """List the named composites."""
    from lrp_domains.core.composites import get, names

    for name in names():
        doc = "needs low=, high=" if name == "epsilon-gamma-box" else repr(get(name).rules)
        typer.echo(f"{name}: {doc}")


@bench_app.command("core")
def bench_core(
    device: str = typer.Option("cpu", help="cpu or cuda"),
    repeats: int = typer.Option(10, help="Timed runs per method (interleaved)."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Also measure peak memory."),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
) -> None:
    """LRP time and peak memory over gradient x input: 1-D CNN with BatchNorm, MLP."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    from lrp_domains.bench.core import print_table, run

    print_table(run(device=device, repeats=repeats, memory=memory, threads=threads or None), device)


@bench_app.command("bpnet-job")
def bench_bpnet_job(peaks: int = typer.Option(1000, help="Peaks (one 2,114 bp window each).")) -> None:
    """A bpnet-lite user's job from the command line (peaks + genome + torch.save model -> run,
    bigWig, seqlets, tfmodisco inputs), each command timed as its own process."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    from lrp_domains.bench.bpnet_job import print_table, run

    print_table(run(peaks), peaks)


@bench_app.command("text")
def bench_text(
    device: str = typer.Option("cpu", help="cpu or cuda"),
    repeats: int = typer.Option(10, help="Timed runs per method (interleaved)."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Also measure peak memory."),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
) -> None:
    """AttnLRP and CP-LRP time and peak memory over gradient x input on the default sentiment model."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    import torch

    if threads:
        torch.set_num_threads(threads)
    from lrp_domains.bench.text import print_table, run

    print_table(run(device=device, repeats=repeats, memory=memory), device)


@bench_app.command("text-faithfulness")
def bench_text_faithfulness(
    limit: int = typer.Option(0, help="Use only the first N dev sentences (0: all 872)."),
    batch_size: int = typer.Option(16, help="Texts per forward/backward pass."),
    steps: int = typer.Option(25, help="Integrated-gradients steps."),
    data_dir: str = typer.Option(None, help="A folder with SST-2 dev.tsv (default: datasets/sst2)."),
    hub: bool = typer.Option(False, "--hub", help="Read glue/sst2 with the datasets package (online)."),
    device: str = typer.Option("cpu", help="cpu or cuda"),
) -> None:
    """AUAC, ABPC, AU-MSE and cost of attnlrp, cp-lrp and baselines on SST-2 dev."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    from lrp_domains.bench.text_faithfulness import print_table, run

    try:
        rows = run(limit=limit or None, batch_size=batch_size, steps=steps, data_dir=data_dir, hub=hub, device=device)
    except FileNotFoundError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    print_table(rows)


@bench_app.command("genes")
def bench_genes(
    models: str = typer.Option("mlp", "--models", help="Comma-separated: mlp (the default PBMC MLP), scanvi "
                               "(scANVI trained on pbmc68k_reduced counts, cached), gene-transformer (a "
                               "Geneformer-style BERT over ranked genes, cached), gene-transformer-values "
                               "(its scGPT-style variant with value bins)."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Where trained models are cached (default "
                                   "~/.cache/lrp-domains)."),
    cells: str = typer.Option("held-out", "--cells", help="scANVI: explain the held-out cells or all."),
) -> None:
    """Marker recall, DE overlap, deletion faithfulness and cost per method on the default PBMC model."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    chosen = [m.strip() for m in models.split(",") if m.strip()]
    known = ("mlp", "scanvi", "gene-transformer", "gene-transformer-values")
    unknown = sorted(set(chosen) - set(known))
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown models {unknown}; choose from {', '.join(known)}", param_hint="--models")
    reexec_with_passive_threads()
    if "mlp" in chosen:
        from lrp_domains.bench.genes import print_table, run

        print_table(*run())
    if "scanvi" in chosen:
        from lrp_domains.bench import genes_scvi

        try:
            genes_scvi.print_table(genes_scvi.run(cache_dir=cache_dir, cells=cells))
        except ValueError as error:
            raise typer.BadParameter(str(error)) from error
    for name in ("gene-transformer", "gene-transformer-values"):
        if name in chosen:
            from lrp_domains.bench import genes_transformer

            where = cache_dir if cache_dir is not None else genes_transformer.DEFAULT_CACHE
            genes_transformer.print_table(genes_transformer.run(cache_dir=where, values=name.endswith("values")))


@bench_app.command("sequences")
def bench_sequences(
    n: int = typer.Option(1000, help="Test sequences generated (about half are positive)."),
    ism: bool = typer.Option(True, "--ism/--no-ism", help="Include in-silico mutagenesis (3 L forwards each)."),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
) -> None:
    """AUROC/AUPR against planted motifs and cost per method on the default sequence CNN."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    from lrp_domains.bench.sequences import print_table, run

    print_table(run(n=n, include_ism=ism, threads=threads or None))


@bench_app.command("concepts")
def bench_concepts(
    n: int = typer.Option(500, help="Positive test sequences for the motif-naming table."),
    batch: int = typer.Option(64, help="Positive test sequences in the batch the cost table times."),
    repeats: int = typer.Option(5, help="Timed runs per method (interleaved)."),
    naive_repeats: int = typer.Option(3, help="Timed runs of the naive loop (64 masked LRP passes per layer)."),
    shuffles: int = typer.Option(3, help="Column shuffles of each PPM for the chance control."),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
) -> None:
    """Latent relevance on the default sequence CNN: all-channel cost in gradients, planted motifs named."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    from lrp_domains.bench.concepts import print_tables, run

    try:
        result = run(n=n, batch=batch, repeats=repeats, naive_repeats=naive_repeats, shuffles=shuffles,
                     threads=threads or None)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    print_tables(result)


@bench_app.command("motifs")
def bench_motifs(
    n_seqlets: int = typer.Option(2000, help="Seqlets annotated (default CNN on synthetic sequences)."),
    repeats: int = typer.Option(3, help="Warm runs; the median is reported."),
    old_seqlets: int = typer.Option(20, help="Seqlets annotated the former (Biopython) way for the comparison."),
) -> None:
    """Seqlets per second annotated against all JASPAR2024 vertebrate motifs: NumPy vs the former Biopython path."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    from lrp_domains.bench.motifs import print_table, run

    print_table(run(n_seqlets=n_seqlets, repeats=repeats, old_seqlets=old_seqlets))


@bench_app.command("variants")
def bench_variants(
    n: int = typer.Option(120, help="Planted motifs; each brings a break, a flank and a far variant."),
    seed: int = typer.Option(0, help="Seed of the synthetic genome and variants."),
    repeats: int = typer.Option(3, help="Timed runs per method (interleaved); the median is reported."),
    quick: bool = typer.Option(False, "--quick", help="30 motifs, one timed run."),
) -> None:
    """Synthetic variants: motif-breaking ones rank first (AUROC), the lost motif named, cost in gradients."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    from lrp_domains.bench.variants import print_table, run

    if n < 1 or repeats < 1:
        typer.echo("error: --n and --repeats must be at least 1", err=True)
        raise typer.Exit(2)
    print_table(run(n=n, seed=seed, repeats=repeats, quick=quick))


@bench_app.command("adapter")
def bench_adapter(
    n: int = typer.Option(500, help="One-hot sequences (200 bp) per call."),
    batch_size: int = typer.Option(64, help="Sequences per forward/backward pass (all methods)."),
    repeats: int = typer.Option(7, help="Timed runs per method (interleaved)."),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
) -> None:
    """What the sequence adapter (and each of its extra outputs) costs on top of the engine."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    from lrp_domains.bench.adapter import print_table, run

    print_table(run(n=n, batch_size=batch_size, repeats=repeats, threads=threads or None))


@bench_app.command("gpu")
def bench_gpu(
    tiny: bool = typer.Option(False, "--tiny", help="Tiny configs, short lengths, small batches: checks the bench in "
                                                   "seconds, on the CPU (or a GPU)."),
    device: str = typer.Option(None, help="cuda (the default when there is one), or cpu with --tiny."),
    lengths: str = typer.Option("", help="Comma-separated token counts (default 1024,4096,8192; --tiny 32,64)."),
    shapes: str = typer.Option("1b,8b", help="Decoder shapes: 1b (Llama-3.2-1B), 8b (Llama-3.1-8B)."),
    repeats: int = typer.Option(0, help="Timed runs per method, interleaved (0: 5; --tiny 2)."),
    search: bool = typer.Option(True, "--search/--no-search", help="Search the longest context that fits."),
    max_seconds: float = typer.Option(0.0, help="Time limit of each longest-context search (0: 60 s; --tiny 10 s)."),
    max_length: int = typer.Option(0, help="Cap of each search in tokens (0: 131072; --tiny 256)."),
    defaults: bool = typer.Option(True, "--defaults/--no-defaults", help="Also the default models' throughput."),
    attention: str = typer.Option("sdpa", help="The decoders' attention implementation (sdpa, eager)."),
) -> None:
    """AttnLRP and CP-LRP on 1B- and 8B-class LLaMA decoders (random bf16 weights) and the default models'
    throughput, on a GPU."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    from lrp_domains.bench.gpu import main

    code = main(device=device, tiny=tiny, lengths=lengths, shapes=shapes, repeats=repeats, search=search,
                max_seconds=max_seconds, max_length=max_length, defaults=defaults, attention=attention)
    if code:
        raise typer.Exit(code)


@bench_app.command("gpu-models")
def bench_gpu_models(
    tiny: bool = typer.Option(False, "--tiny", help="Tiny models and sequences: checks the bench in seconds on a CPU."),
    device: str = typer.Option(None, help="cuda (the default when there is one), or cpu with --tiny."),
    models: str = typer.Option(",".join(("bpnet-profile", "bpnet-counts", "enformer", "borzoi", "nt")),
                               help="Comma-separated: bpnet-profile, bpnet-counts, enformer, borzoi, nt."),
    repeats: int = typer.Option(0, help="Timed runs per method, interleaved (0: 5; --tiny 2)."),
) -> None:
    """BPNet, Enformer, Borzoi and an NT-like DNA language model on a GPU: our explanation against a
    plain gradient (time, memory), float32 against the CPU, bfloat16 against float32."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    from lrp_domains.bench.gpu_models import print_table, run

    try:
        rows = run(device=device, tiny=tiny, models=tuple(m.strip() for m in models.split(",") if m.strip()),
                   repeats=repeats or None)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    print_table(rows)


@bench_app.command("scale")
def bench_scale(
    kind: str = typer.Option("sequences", help="sequences (synthetic FASTA) or text (SST-2 dev, repeated)."),
    n: int = typer.Option(2000, help="Items in the throughput input (the memory probe also runs 10x)."),
    shard_size: int = typer.Option(250, help="Rows per shard."),
    repeats: int = typer.Option(2, help="Timed runs per engine (interleaved)."),
) -> None:
    """Items/s of the local engine and Ray (1 and 2 actors); peak memory for 1x and 10x the input."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    if kind not in ("sequences", "text"):
        raise typer.BadParameter(f"--kind must be sequences or text, got {kind!r}")
    try:
        import ray.data  # noqa: F401
    except ImportError as error:
        typer.echo('error: bench scale needs Ray Data: pip install "lrp-domains[distributed]"', err=True)
        raise typer.Exit(1) from error
    reexec_with_passive_threads()
    from lrp_domains.bench.scale import print_table, run

    print_table(run(kind=kind, n=n, shard_size=shard_size, repeats=repeats))


@bench_app.command("long-record")
def bench_long_record(
    n: int = typer.Option(200, help="Short records."),
    length: int = typer.Option(200, help="Bases per short record."),
    long: int = typer.Option(100_000, help="Bases of the one long record."),
) -> None:
    """Peak memory and bytes written by `bio sequences` with and without one long record."""
    from lrp_domains.bench.long_record import print_table, run

    print_table(run(n=n, length=length, long=long))


@bench_app.command("peers")
def bench_peers(
    n: int = typer.Option(400, help="Test sequences generated (about half are positive)."),
    references: int = typer.Option(20, help="Shuffled references per sequence for DeepLiftShap."),
) -> None:
    """Captum's LRP, DeepLiftShap and integrated gradients next to ours on the default sequence CNN."""
    from lrp_domains.bench.peers import captum_missing

    missing = captum_missing()
    if missing:
        typer.echo(missing)
        raise typer.Exit(1)
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    from lrp_domains.bench.peers import print_table, run

    print_table(run(n=n, references=references))


@bench_app.command("genomics-models")
def bench_genomics_models(
    n: int = typer.Option(400, help="Test sequences generated (about half are positive, those are explained)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny models and settings: checks the bench in seconds."),
    cache_dir: Path = typer.Option(None, help="Where trained models are cached (default: "
                                              "~/.cache/lrp-domains/genomics-models)."),
    models: str = typer.Option("nt,bpnet", help="Comma-separated: nt (NT-like token model), bpnet (BPNet-like)."),
) -> None:
    """Planted-motif AUROC/AUPR and cost in gradients of our LRP, gradient x input, integrated gradients, ISM and
    tangermeme's DeepLiftShap on an NT-like DNA language model and a BPNet-like profile model (1 thread)."""
    from lrp_domains.bench.measure import reexec_with_passive_threads

    reexec_with_passive_threads()
    import torch

    torch.set_num_threads(1)
    from lrp_domains.bench.genomics_models import print_report, run

    try:
        result = run(n=n, quick=quick, cache_dir=cache_dir,
                     models=tuple(m.strip() for m in models.split(",") if m.strip()), log=typer.echo)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    print_report(result)


@bench_app.command("startup")
def bench_startup(
    repeats: int = typer.Option(5, help="Timed fresh processes per command (interleaved), after one untimed round."),
    sequences: bool = typer.Option(True, "--sequences/--no-sequences", help="Also `bio sequences` on the example "
                                                                            "FASTA (seconds, no target)."),
    passive_threads: bool = typer.Option(False, "--passive-threads", help="Run the commands with "
                                                                         "OMP_WAIT_POLICY=PASSIVE (shared machines)."),
) -> None:
    """Cold-start seconds of `--help`, the group helps, one sentence explained and `import lrp_domains`, in fresh
    processes, next to the targets (0.5 s, 5 s)."""
    from lrp_domains.bench.startup import print_table, run

    try:
        rows = run(repeats=repeats, sequences=sequences, passive_threads=passive_threads)
    except (ValueError, RuntimeError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    print_table(rows)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
