"""``lrp-domains bench genome-scale``: a ChromBPNet-sized model over a chromosome's windows, timed
against what ChromBPNet users live with.

ChromBPNet users report about 10 hours for chromosome 1's ~330,000 windows with DeepLiftShap's 20
references (kundajelab/chrombpnet #166). Made in a folder: a random chromosome of chr1's size,
BED3 windows of 2,114 bp tiled across it every 754 bp (330,000 by default, and a chromosome as
long as they need), and a ChromBPNet-sized model with random weights: bpnet-lite's ``BPNet`` with
512 filters and 8 dilated layers, one output track and no control track (the bias-free
accessibility model, ``chrombpnet_nobias``, whose counts head ChromBPNet explains), saved with
``torch.save``. Then, on one device:

- the whole job as a user runs it: ``run sequences --regions ... --target counts --device D`` over
  every window, and ``run bigwig``, each its own process (start-up, reading the genome, writing
  the shards and the bigWig included);
- on an evenly spaced sample of the same windows, in one process: our explanation, a plain
  gradient of the same counts output, and tangermeme's ``deep_lift_shap`` with 20 dinucleotide
  shuffles per window (what ChromBPNet's contribution step runs), each projected to every window.

``tiny=True`` makes a small model and few windows so that the same code runs on a CPU in seconds
(``tests/test_bench_genome_scale.py``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

WIDTH = 2114
#: chr1's ~330,000 windows over its 248,956,422 bp (hg38): one window every 754 bp.
STRIDE = 754
WINDOWS = 330_000
#: What ChromBPNet users report for chromosome 1 with DeepLiftShap (kundajelab/chrombpnet #166).
REPORTED_HOURS = 10.0
MARGIN = 1000
#: The fewest windows whose job time is projected to all windows (a process's start-up is a few
#: seconds: at least 1,000 windows keep it a small part).
PROJECT_FROM = 1000


@dataclass(frozen=True)
class Size:
    """The model, the windows and the sample of one bench run."""

    filters: int
    layers: int
    windows: int
    sample: int
    shuffles: int
    batch_size: int

    @property
    def chromosome(self) -> int:
        """Bases of the random chromosome: the windows' tiling and a margin at each end."""
        return STRIDE * (self.windows - 1) + WIDTH + 2 * MARGIN


FULL = Size(filters=512, layers=8, windows=WINDOWS, sample=256, shuffles=20, batch_size=64)
TINY = Size(filters=8, layers=2, windows=24, sample=4, shuffles=20, batch_size=8)


def write_chromosome(path: Path, length: int, seed: int = 0, name: str = "chr1", block: int = 80 * 125_000) -> None:
    """One random chromosome as FASTA, 80 bases a line (a few seconds for chr1's size), ``block``
    bases (a multiple of 80: whole lines) at a time."""
    if block % 80:
        raise ValueError(f"block must be a multiple of 80 (whole lines), got {block}")
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    with path.open("wb") as handle:
        handle.write(f">{name}\n".encode())
        for start in range(0, length, block):
            size = min(block, length - start)
            bases = letters[rng.integers(0, 4, size, dtype=np.uint8)]
            full, rest = divmod(size, 80)
            lines = np.empty((full, 81), dtype=np.uint8)
            lines[:, :80] = bases[: full * 80].reshape(full, 80)
            lines[:, 80] = ord("\n")
            handle.write(lines.tobytes())
            if rest:
                handle.write(bases[full * 80 :].tobytes() + b"\n")


def write_windows(path: Path, windows: int, name: str = "chr1") -> None:
    """BED3 windows of :data:`WIDTH` bases every :data:`STRIDE` bases from :data:`MARGIN` on."""
    starts = MARGIN + STRIDE * np.arange(windows, dtype=np.int64)
    with path.open("w") as handle:
        handle.writelines(f"{name}\t{start}\t{start + WIDTH}\n" for start in starts.tolist())


def build_model(size: Size, seed: int = 0) -> torch.nn.Module:
    """A random-weight bpnet-lite BPNet shaped like ChromBPNet's accessibility model (eval mode)."""
    from bpnetlite.bpnet import BPNet

    torch.manual_seed(seed)
    return BPNet(n_filters=size.filters, n_layers=size.layers, n_outputs=1, n_control_tracks=0, verbose=False).eval()


def make_inputs(folder: Path, size: Size) -> None:
    """``chr1.fa``, ``windows.bed`` and ``chrombpnet_nobias.torch`` in ``folder``."""
    write_chromosome(folder / "chr1.fa", size.chromosome)
    write_windows(folder / "windows.bed", size.windows)
    torch.save(build_model(size), folder / "chrombpnet_nobias.torch")


def job_commands(device: torch.device, size: Size) -> list[tuple[str, list[str]]]:
    """The user's two commands: every window explained into shards, then the bigWig."""
    return [
        (
            "run sequences",
            [
                "run",
                "sequences",
                "--regions",
                "windows.bed",
                "--genome",
                "chr1.fa",
                "--width",
                str(WIDTH),
                "--model",
                "chrombpnet_nobias.torch",
                "--target",
                "counts",
                "--device",
                str(device),
                "--option",
                f"batch_size={size.batch_size}",
                "--shard-size",
                str(max(size.batch_size, 1000 // size.batch_size * size.batch_size)),
                "--out",
                "run",
                "--no-progress",
            ],
        ),
        ("run bigwig", ["run", "bigwig", "run", "--out", "relevance.bw"]),
    ]


def time_job(folder: Path, device: torch.device, size: Size) -> list[tuple[str, float]]:
    """Each command of :func:`job_commands` as its own process in ``folder``: ``(step, seconds)``."""
    timings = []
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    for step, args in job_commands(device, size):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lrp_domains", *args], cwd=folder, env=env, capture_output=True)
        if done.returncode:
            said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{step} failed (exit {done.returncode}): {' / '.join(said)}")
        timings.append((step, time.perf_counter() - start))
    return timings


def sample_windows(folder: Path, size: Size) -> torch.Tensor:
    """One-hot ``(sample, 4, WIDTH)`` of evenly spaced windows of ``windows.bed``, read from the genome."""
    from lrp_domains.bio.sequences.genome import open_fasta
    from lrp_domains.bio.sequences.onehot import one_hot

    lines = (folder / "windows.bed").read_text().splitlines()
    picked = np.linspace(0, len(lines) - 1, min(size.sample, len(lines))).round().astype(int)
    fasta, opened = open_fasta(folder / "chr1.fa")
    try:
        sequences = []
        for index in picked.tolist():
            chrom, start, end = lines[index].split("\t")[:3]
            sequences.append(str(fasta[chrom][int(start) : int(end)]))
    finally:
        if opened:
            fasta.close()
    return one_hot(sequences)


def time_sample(
    folder: Path, device: torch.device, size: Size, repeats: int = 3
) -> tuple[dict[str, float], dict[str, Any]]:
    """Seconds per window of our explanation, a plain gradient of the same counts output and
    tangermeme's ``deep_lift_shap`` on the sample (medians of ``repeats`` interleaved runs; DLS once
    after a warm-up: it is the slow one), and what agrees between them."""
    from bpnetlite.bpnet import CountWrapper
    from tangermeme.deep_lift_shap import deep_lift_shap

    from lrp_domains.bench.measure import correlation, timed_call
    from lrp_domains.bio.sequences.explainer import SequenceExplainer
    from lrp_domains.bio.sequences.targets import counts_target
    from lrp_domains.models import load_saved_module

    model = load_saved_module(folder / "chrombpnet_nobias.torch").to(device)  # as the command loads it
    onehot = sample_windows(folder, size)
    explainer = SequenceExplainer(model)
    target = counts_target()
    wrapped = CountWrapper(model).eval()

    def ours() -> torch.Tensor:
        return explainer.explain(onehot, target=target, batch_size=size.batch_size).relevance

    def gradient() -> torch.Tensor:
        parts = []
        for batch in onehot.split(size.batch_size):
            x = batch.to(device).requires_grad_(True)
            (grad,) = torch.autograd.grad(wrapped(x).sum(), x)
            parts.append((grad * x).detach().cpu())
        return torch.cat(parts)

    def dls(n: int | None = None) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return deep_lift_shap(
                wrapped,
                onehot[:n],
                target=0,
                n_shuffles=size.shuffles,
                batch_size=size.batch_size,
                device=str(device),
                random_state=0,
                warning_threshold=float("inf"),
            )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: biases absorb relevance (delta warnings)
        ours(), gradient(), dls(1)  # warm-up: kernels, caches
        times: dict[str, list[float]] = {"ours": [], "gradient": []}
        results: dict[str, torch.Tensor] = {}
        for _ in range(repeats):
            for name, fn in (("ours", ours), ("gradient", gradient)):
                seconds, _, result = timed_call(fn, device)
                times[name].append(seconds)
                results[name] = result.float().cpu()
        seconds, _, result = timed_call(dls, device)
    n = onehot.shape[0]
    per_window = {name: statistics.median(values) / n for name, values in times.items()}
    per_window["deep_lift_shap"] = seconds / n
    from lrp_domains.bench.flops import lower_bound

    observed = onehot.bool()
    agreement = {
        "bound": lower_bound(explainer.runner, onehot[:1].to(device), explainer.composite),
        "ours_vs_dls": correlation(results["ours"][observed], result.float().cpu()[observed]),
        "gradient_vs_dls": correlation(results["gradient"][observed], result.float().cpu()[observed]),
        "sample": n,
    }
    return per_window, agreement


def run(
    device: str | None = None,
    tiny: bool = False,
    windows: int | None = None,
    sample: int | None = None,
    batch_size: int | None = None,
    folder: str | Path | None = None,
    job: bool = True,
) -> dict[str, Any]:
    """The bench (``device``: default CUDA; a CPU only with ``tiny`` or a ``windows`` count given);
    ``folder``: where the inputs and the run go (kept; default a temporary folder)."""
    from lrp_domains.run.devices import resolve_device

    chosen = resolve_device(device)
    if chosen.type != "cuda" and not tiny and windows is None:
        raise ValueError(
            "no CUDA device: the full bench (330,000 ChromBPNet-sized windows) measures a GPU; add --tiny "
            "for a small version on the CPU, or --windows N for N full-size windows here"
        )
    base = TINY if tiny else FULL
    size = Size(
        base.filters,
        base.layers,
        windows or base.windows,
        sample or base.sample,
        base.shuffles,
        batch_size or base.batch_size,
    )
    if min(size.windows, size.sample, size.batch_size) < 1:
        raise ValueError("windows, sample and batch size must be at least 1")
    if folder is not None and Path(folder).exists() and any(Path(folder).iterdir()):
        # a run left there would resume (nothing timed), and the inputs would be written over
        raise ValueError(f"--folder {folder} is not empty; give a new or empty folder for the bench's inputs and run")
    with tempfile.TemporaryDirectory() as temporary:
        where = Path(folder) if folder is not None else Path(temporary)
        where.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        make_inputs(where, size)
        made = time.perf_counter() - start
        timings = time_job(where, chosen, size) if job else []
        per_window, agreement = time_sample(where, chosen, size)
    return {
        "device": torch.cuda.get_device_name(chosen) if chosen.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "size": size,
        "inputs_s": made,
        "job": timings,
        "per_window": per_window,
        "agreement": agreement,
    }


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def print_table(result: dict[str, Any]) -> None:
    """The whole job's steps and the sample's methods, each projected to chr1's 330,000 windows."""
    size: Size = result["size"]
    device = result["device"] + (f", {result['threads']} threads" if result["device"] == "cpu" else "")
    print(
        f"genome scale on {device}: {size.windows:,} windows of {WIDTH:,} bp (every {STRIDE} bp over a "
        f"{size.chromosome:,} bp random chromosome), BPNet {size.filters} filters x {size.layers} layers "
        f"(random weights), counts target, batch {size.batch_size}"
    )
    print(f"| step | windows | seconds | windows/s | projected to {WINDOWS:,} windows |\n|---|---|---|---|---|")
    steps = [*result["job"], ("the whole job", sum(seconds for _, seconds in result["job"]))] if result["job"] else []
    for step, seconds in steps:
        rate = size.windows / seconds
        # a process's start-up (seconds) is a fixed cost: projected from enough windows only
        projected = _hours(WINDOWS / rate) if size.windows >= PROJECT_FROM else "-"
        label = step if step == "the whole job" else f"{step} (own process)"
        print(f"| {label} | {size.windows:,} | {seconds:.1f} | {rate:,.1f} | {projected} |")
    per_window = result["per_window"]
    agreement = result["agreement"]
    n = agreement["sample"]
    labels = {
        "ours": "ours, in one process",
        "gradient": "plain gradient x input",
        "deep_lift_shap": f"tangermeme deep_lift_shap, {size.shuffles} shuffles",
    }
    for name, label in labels.items():
        seconds = per_window[name]
        print(f"| {label} (sample) | {n} | {seconds * n:.2f} | {1 / seconds:,.1f} | {_hours(seconds * WINDOWS)} |")
    ours = per_window["ours"] / per_window["gradient"]
    print(
        f"ours / gradient: {ours:.2f}x (MAC bound {agreement['bound']:.2f}x: {ours / agreement['bound']:.2f} over "
        f"it); deep_lift_shap / ours: {per_window['deep_lift_shap'] / per_window['ours']:,.0f}x. "
        f"ChromBPNet users report ~{REPORTED_HOURS:.0f} h for chr1's {WINDOWS:,} windows (kundajelab/chrombpnet #166)."
    )
    print(
        f"Correlation with deep_lift_shap on observed bases (random weights: not a measure of quality, which "
        f"`bench genomics-models` compares on planted motifs): ours {agreement['ours_vs_dls']:.2f}, gradient x "
        f"input {agreement['gradient_vs_dls']:.2f}."
    )
