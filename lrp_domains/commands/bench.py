"""``lrp-domains bench ...``: benchmarks that print ratios measured in one run.

Each command parses its options and calls its bench in ``lrp_domains.bench``; the timing benches share
one preamble (:func:`bench`) and every problem with the options ends as one ``error: ...`` line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from lrp_domains.commands.common import one_line_errors

app = typer.Typer(help="Benchmarks that print ratios measured in one run.", no_args_is_help=True)

Command = TypeVar("Command", bound=Callable[..., Any])

# The options several benches share.
DEVICE = typer.Option("cpu", help="cpu or cuda")
GPU_DEVICE = typer.Option(None, help="cuda (the default when there is one), or cpu with --tiny.")
REPEATS = typer.Option(10, help="Timed runs per method (interleaved).")
MEMORY = typer.Option(True, "--memory/--no-memory", help="Also measure peak memory.")
THREADS = typer.Option(0, help="CPU threads (0: torch's default).")


def bench(name: str, *, threads: int | None = None) -> Callable[[Command], Command]:
    """Register a timing bench as ``lrp-domains bench NAME``; its body runs after the preamble they share:
    the process re-executed with passive OpenMP threads unless ``OMP_WAIT_POLICY`` is set (busy-waiting
    threads distort timings on small shared machines), and, given ``threads``, torch limited to that many."""

    def register(command: Command) -> Command:
        @functools.wraps(command)
        def preamble(*args: Any, **kwargs: Any) -> Any:
            from lrp_domains.bench.measure import reexec_with_passive_threads

            reexec_with_passive_threads()
            if threads:
                import torch

                torch.set_num_threads(threads)
            return command(*args, **kwargs)

        app.command(name)(preamble)
        return command

    return register


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated option as a tuple of names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _require(missing: str | None) -> None:
    """A bench whose optional package is not installed says what to install and exits with status 1."""
    if missing:
        typer.echo(f"error: {missing}", err=True)
        raise typer.Exit(1)


@bench("core")
def core(device: str = DEVICE, repeats: int = REPEATS, memory: bool = MEMORY, threads: int = THREADS) -> None:
    """LRP time and peak memory over gradient x input: 1-D CNN with BatchNorm, MLP (bare and in a
    module), residual CNN."""
    from lrp_domains.bench.engine.core import print_table, run

    print_table(run(device=device, repeats=repeats, memory=memory, threads=threads or None), device)


@bench("scvi-job")
def scvi_job(cells: int = typer.Option(2000, help="Cells (x 500 genes).")) -> None:
    """An scvi-tools user's job from the command line (a SCANVI saved with model.save -> bio genes,
    run h5ad), each command timed as its own process."""
    from lrp_domains.bench.runs.scvi_job import print_table, run

    print_table(run(cells), cells)


@bench("bpnet-job")
def bpnet_job(peaks: int = typer.Option(1000, help="Peaks (one 2,114 bp window each).")) -> None:
    """A bpnet-lite user's job from the command line (peaks + genome + torch.save model -> run,
    bigWig, seqlets, tfmodisco inputs), each command timed as its own process."""
    from lrp_domains.bench.runs.bpnet_job import print_table, run

    print_table(run(peaks), peaks)


@bench("text")
def text(device: str = DEVICE, repeats: int = REPEATS, memory: bool = MEMORY, threads: int = THREADS) -> None:
    """AttnLRP and CP-LRP time and peak memory over gradient x input on the default sentiment model."""
    from lrp_domains.bench.text.cost import print_table, run

    print_table(run(device=device, repeats=repeats, memory=memory, threads=threads or None), device)


@bench("text-faithfulness")
def text_faithfulness(
    limit: int = typer.Option(0, help="Use only the first N dev sentences (0: all 872)."),
    batch_size: int = typer.Option(16, help="Texts per forward/backward pass."),
    steps: int = typer.Option(25, help="Integrated-gradients steps."),
    data_dir: str = typer.Option(None, help="A folder with SST-2 dev.tsv (default: datasets/sst2)."),
    hub: bool = typer.Option(False, "--hub", help="Read glue/sst2 with the datasets package (online)."),
    device: str = DEVICE,
) -> None:
    """AUAC, ABPC, AU-MSE and cost of attnlrp, cp-lrp and baselines on SST-2 dev."""
    from lrp_domains.bench.text.faithfulness import print_table, run

    with one_line_errors():
        rows = run(limit=limit or None, batch_size=batch_size, steps=steps, data_dir=data_dir, hub=hub, device=device)
    print_table(rows)


GENE_MODELS = ("mlp", "scanvi", "gene-transformer", "gene-transformer-values")


@bench("genes")
def genes(
    models: str = typer.Option(
        "mlp",
        "--models",
        help="Comma-separated: mlp (the default PBMC MLP), scanvi "
        "(scANVI trained on pbmc68k_reduced counts, cached), gene-transformer (a "
        "Geneformer-style BERT over ranked genes, cached), gene-transformer-values "
        "(its scGPT-style variant with value bins).",
    ),
    cache_dir: Path = typer.Option(
        None, "--cache-dir", help="Where trained models are cached (default ~/.cache/lrp-domains)."
    ),
    cells: str = typer.Option("held-out", "--cells", help="scANVI: explain the held-out cells or all."),
) -> None:
    """Marker recall, DE overlap, deletion faithfulness and cost per method on the default PBMC model."""
    chosen = _names(models)
    unknown = sorted(set(chosen) - set(GENE_MODELS))
    if unknown or not chosen:
        raise typer.BadParameter(
            f"unknown models {unknown}; choose from {', '.join(GENE_MODELS)}", param_hint="--models"
        )
    if "mlp" in chosen:
        from lrp_domains.bench.genes.mlp import print_table, run

        print_table(*run())
    if "scanvi" in chosen:
        from lrp_domains.bench.genes import scanvi

        try:
            scanvi.print_table(scanvi.run(cache_dir=cache_dir, cells=cells))
        except ValueError as error:
            raise typer.BadParameter(str(error)) from error
    for name in ("gene-transformer", "gene-transformer-values"):
        if name in chosen:
            from lrp_domains.bench.genes import transformer

            transformer.print_table(transformer.run(cache_dir=cache_dir, values=name.endswith("values")))


@bench("sequences")
def sequences(
    n: int = typer.Option(1000, help="Test sequences generated (about half are positive)."),
    ism: bool = typer.Option(True, "--ism/--no-ism", help="Include in-silico mutagenesis (3 L forwards each)."),
    threads: int = THREADS,
) -> None:
    """AUROC/AUPR against planted motifs and cost per method on the default sequence CNN."""
    from lrp_domains.bench.genomics.sequences import print_table, run

    print_table(run(n=n, include_ism=ism, threads=threads or None))


@bench("concepts")
def concepts(
    n: int = typer.Option(500, help="Positive test sequences for the motif-naming table."),
    batch: int = typer.Option(64, help="Positive test sequences in the batch the cost table times."),
    repeats: int = typer.Option(5, help="Timed runs per method (interleaved)."),
    naive_repeats: int = typer.Option(3, help="Timed runs of the naive loop (64 masked LRP passes per layer)."),
    shuffles: int = typer.Option(3, help="Column shuffles of each PPM for the chance control."),
    threads: int = THREADS,
) -> None:
    """Latent relevance on the default sequence CNN: all-channel cost in gradients, planted motifs named."""
    from lrp_domains.bench.genomics.concepts import print_tables, run

    with one_line_errors():
        result = run(
            n=n, batch=batch, repeats=repeats, naive_repeats=naive_repeats, shuffles=shuffles, threads=threads or None
        )
    print_tables(result)


@bench("motifs")
def motifs(
    n_seqlets: int = typer.Option(2000, help="Seqlets annotated (default CNN on synthetic sequences)."),
    repeats: int = typer.Option(3, help="Warm runs; the median is reported."),
    old_seqlets: int = typer.Option(20, help="Seqlets annotated the former (Biopython) way for the comparison."),
) -> None:
    """Seqlets per second annotated against all JASPAR2024 vertebrate motifs: NumPy vs the former Biopython path."""
    from lrp_domains.bench.genomics.motifs import print_table, run

    print_table(run(n_seqlets=n_seqlets, repeats=repeats, old_seqlets=old_seqlets))


@bench("variants")
def variants(
    n: int = typer.Option(120, help="Planted motifs; each brings a break, a flank and a far variant."),
    seed: int = typer.Option(0, help="Seed of the synthetic genome and variants."),
    repeats: int = typer.Option(3, help="Timed runs per method (interleaved); the median is reported."),
    quick: bool = typer.Option(False, "--quick", help="30 motifs, one timed run."),
) -> None:
    """Synthetic variants: motif-breaking ones rank first (AUROC), the lost motif named, cost in gradients."""
    from lrp_domains.bench.genomics.variants import print_table, run

    with one_line_errors():
        result = run(n=n, seed=seed, repeats=repeats, quick=quick)
    print_table(result)


@bench("batch-one")
def batch_one(
    cases: str = typer.Option("mlp-module,residual-cnn,bpnet,minilm", help="Comma-separated cases."),
    batch: int = typer.Option(1, help="Examples per explanation."),
    repeats: int = typer.Option(30, help="Timed runs per method (interleaved)."),
    threads: int = THREADS,
    device: str = DEVICE,
) -> None:
    """One example at a time: our explanation over a plain gradient, beside the MAC bound, for an
    MLP held in a module, a residual CNN, BPNet and one MiniLM sentence (the MLP and the residual
    CNN also by the general engine)."""
    from lrp_domains.bench.engine.batch_one import print_table, run

    chosen = tuple(c.strip() for c in cases.split(",") if c.strip())
    print_table(run(chosen, batch=batch, repeats=repeats, threads=threads or None, device=device))


@bench("fixed-cost")
def fixed_cost(
    calls: int = typer.Option(0, help="Only run this many calls of --method (for valgrind's instruction count)."),
    method: str = typer.Option("epsilon", help="gradient, epsilon or genomics (with --calls)."),
    n: int = typer.Option(500, help="Calls timed for the garbage collector."),
) -> None:
    """What a call costs besides its arithmetic: objects left for the garbage collector and its time,
    or (with --calls) only the calls, for counting their instructions with valgrind."""
    from lrp_domains.bench.engine import fixed_cost as bench_fixed_cost

    with one_line_errors():
        if calls:
            bench_fixed_cost.calls(method, calls)
            return
        rows = bench_fixed_cost.garbage(n)
    bench_fixed_cost.print_table(rows)


@bench("adapter")
def adapter(
    n: int = typer.Option(500, help="One-hot sequences (200 bp) per call."),
    batch_size: int = typer.Option(64, help="Sequences per forward/backward pass (all methods)."),
    repeats: int = typer.Option(7, help="Timed runs per method (interleaved)."),
    threads: int = THREADS,
) -> None:
    """What the sequence adapter (and each of its extra outputs) costs on top of the engine."""
    from lrp_domains.bench.engine.adapter import print_table, run

    print_table(run(n=n, batch_size=batch_size, repeats=repeats, threads=threads or None))


@bench("gpu")
def gpu(
    tiny: bool = typer.Option(
        False,
        "--tiny",
        help="Tiny configs, short lengths, small batches: checks the bench in seconds, on the CPU (or a GPU).",
    ),
    device: str = GPU_DEVICE,
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
    from lrp_domains.bench.gpu.decoders import main

    code = main(
        device=device,
        tiny=tiny,
        lengths=lengths,
        shapes=shapes,
        repeats=repeats,
        search=search,
        max_seconds=max_seconds,
        max_length=max_length,
        defaults=defaults,
        attention=attention,
    )
    if code:  # main printed the error
        raise typer.Exit(code)


@bench("gpu-models")
def gpu_models(
    tiny: bool = typer.Option(False, "--tiny", help="Tiny models and sequences: checks the bench in seconds on a CPU."),
    device: str = GPU_DEVICE,
    models: str = typer.Option(
        ",".join(("bpnet-profile", "bpnet-counts", "enformer", "borzoi", "nt")),
        help="Comma-separated: bpnet-profile, bpnet-counts, enformer, borzoi, nt.",
    ),
    repeats: int = typer.Option(0, help="Timed runs per method, interleaved (0: 5; --tiny 2)."),
) -> None:
    """BPNet, Enformer, Borzoi and an NT-like DNA language model on a GPU: our explanation against a
    plain gradient (time, memory), float32 against the CPU, bfloat16 against float32."""
    from lrp_domains.bench.gpu.models import print_table, run

    with one_line_errors():
        rows = run(device=device, tiny=tiny, models=_names(models), repeats=repeats or None)
    print_table(rows)


@bench("scale")
def scale(
    kind: str = typer.Option("sequences", help="sequences (synthetic FASTA) or text (SST-2 dev, repeated)."),
    n: int = typer.Option(2000, help="Items in the throughput input (the memory probe also runs 10x)."),
    shard_size: int = typer.Option(250, help="Rows per shard."),
    repeats: int = typer.Option(2, help="Timed runs per engine (interleaved)."),
) -> None:
    """Items/s of the local engine and Ray (1 and 2 actors); peak memory for 1x and 10x the input."""
    if kind not in ("sequences", "text"):
        raise typer.BadParameter(f"--kind must be sequences or text, got {kind!r}")
    from lrp_domains.bench.runs.scale import print_table, ray_missing, run

    _require(ray_missing())
    print_table(run(kind=kind, n=n, shard_size=shard_size, repeats=repeats))


@app.command("long-record")
def long_record(
    n: int = typer.Option(200, help="Short records."),
    length: int = typer.Option(200, help="Bases per short record."),
    long: int = typer.Option(100_000, help="Bases of the one long record."),
) -> None:
    """Peak memory and bytes written by `bio sequences` with and without one long record."""
    from lrp_domains.bench.runs.long_record import print_table, run

    print_table(run(n=n, length=length, long=long))


@bench("peers")
def peers(
    n: int = typer.Option(400, help="Test sequences generated (about half are positive)."),
    references: int = typer.Option(20, help="Shuffled references per sequence for DeepLiftShap."),
) -> None:
    """Captum's LRP, DeepLiftShap and integrated gradients next to ours on the default sequence CNN."""
    from lrp_domains.bench.genomics.peers import captum_missing

    _require(captum_missing())
    from lrp_domains.bench.genomics.peers import print_table, run

    print_table(run(n=n, references=references))


@bench("genomics-models", threads=1)
def genomics_models(
    n: int = typer.Option(400, help="Test sequences generated (about half are positive, those are explained)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny models and settings: checks the bench in seconds."),
    cache_dir: Path = typer.Option(
        None, help="Where trained models are cached (default: ~/.cache/lrp-domains/genomics-models)."
    ),
    models: str = typer.Option(
        "nt,bpnet,alibi,caduceus",
        help="Comma-separated: nt (NT-like token model), bpnet (BPNet-like), alibi (DNABERT-2-like ALiBi "
        "encoder), caduceus (Caduceus-like state-space model).",
    ),
) -> None:
    """Planted-motif AUROC/AUPR and cost in gradients of our LRP, gradient x input, integrated gradients, ISM and
    tangermeme's DeepLiftShap on an NT-like DNA language model, a BPNet-like profile model, a DNABERT-2-like
    ALiBi encoder and a Caduceus-like state-space model (1 thread)."""
    from lrp_domains.bench.genomics.models import print_report, run

    with one_line_errors():
        result = run(n=n, quick=quick, cache_dir=cache_dir, models=_names(models), log=typer.echo)
    print_report(result)


@app.command("startup")
def startup(
    repeats: int = typer.Option(5, help="Timed fresh processes per command (interleaved), after one untimed round."),
    sequences: bool = typer.Option(
        True, "--sequences/--no-sequences", help="Also `bio sequences` on the example FASTA (seconds, no target)."
    ),
    passive_threads: bool = typer.Option(
        False, "--passive-threads", help="Run the commands with OMP_WAIT_POLICY=PASSIVE (shared machines)."
    ),
) -> None:
    """Cold-start seconds of `--help`, the group helps, one sentence explained and `import lrp_domains`, in fresh
    processes, next to the targets (0.5 s, 5 s)."""
    from lrp_domains.bench.runs.startup import print_table, run

    with one_line_errors(RuntimeError):  # RuntimeError: a measured command failed
        rows = run(repeats=repeats, sequences=sequences, passive_threads=passive_threads)
    print_table(rows)


@bench("genome-scale")
def genome_scale(
    tiny: bool = typer.Option(
        False, "--tiny", help="A small model and 24 windows: checks the bench in seconds on a CPU."
    ),
    device: str = typer.Option("auto", help="auto (a CUDA GPU when torch sees one), cuda, cuda:N, or cpu."),
    windows: int = typer.Option(None, help="Windows of 2,114 bp (default 330,000, chr1's; --tiny 24)."),
    sample: int = typer.Option(None, help="Windows timed in one process for each method (default 256; --tiny 4)."),
    batch_size: int = typer.Option(None, help="Windows per forward/backward pass (default 64; --tiny 8)."),
    folder: Path = typer.Option(None, help="Keep the inputs and the run here (default: a temporary folder)."),
    job: bool = typer.Option(True, "--job/--no-job", help="Time the whole job (run sequences, run bigwig)."),
) -> None:
    """A ChromBPNet-sized model over chr1's 330,000 windows (run sequences, run bigwig) on one GPU, and
    tangermeme's deep_lift_shap with 20 shuffles on a sample of the same windows, projected."""
    from lrp_domains.bench.runs.genome_scale import print_table, run

    with one_line_errors():
        result = run(
            device=device, tiny=tiny, windows=windows, sample=sample, batch_size=batch_size, folder=folder, job=job
        )
    print_table(result)
