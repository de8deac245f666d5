"""``lrp-domains bench bpnet-job``: a bpnet-lite user's whole job from the command line, timed.

Inputs made in a temporary folder: a random genome, narrowPeak peaks on it, and a random-weight
bpnet-lite BPNet saved with ``torch.save``. Then the README's four commands (run with
``--regions``, bigWig, seqlets with JASPAR2024, export-modisco) and the run command again (a
resume), each as its own process, timed from start to exit (start-up included).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrp_domains.bench.runs.commands import print_timings, time_commands


def make_inputs(
    folder: Path,
    peaks: int = 1000,
    genome: tuple[int, int] = (1_000_000, 600_000),
    filters: int = 64,
    layers: int = 8,
    seed: int = 0,
) -> None:
    """``genome.fa`` (two random chromosomes), ``peaks.narrowPeak`` (400 bp peaks, summit in the
    middle, alternating strands) and ``bpnet.torch`` (``torch.save`` of a random-weight BPNet)."""
    import torch
    from bpnetlite.bpnet import BPNet

    rng = np.random.default_rng(seed)
    sizes = {"chr1": genome[0], "chr2": genome[1]}
    with (folder / "genome.fa").open("w") as handle:
        for name, size in sizes.items():
            sequence = "".join(rng.choice(list("ACGT"), size))
            handle.write(f">{name}\n" + "\n".join(sequence[i : i + 80] for i in range(0, size, 80)) + "\n")
    with (folder / "peaks.narrowPeak").open("w") as handle:
        for i in range(peaks):
            chrom = "chr1" if i < peaks * 0.6 else "chr2"
            start = int(rng.integers(2000, sizes[chrom] - 3000))
            handle.write(f"{chrom}\t{start}\t{start + 400}\tp{i}\t0\t{'+-'[i % 2]}\t1\t1\t1\t200\n")
    torch.manual_seed(seed)
    model = BPNet(n_filters=filters, n_layers=layers, n_outputs=2, n_control_tracks=2, verbose=False).eval()
    torch.save(model, folder / "bpnet.torch")


COMMANDS = [
    (
        "run",
        [
            "run",
            "sequences",
            "--regions",
            "peaks.narrowPeak",
            "--genome",
            "genome.fa",
            "--width",
            "2114",
            "--model",
            "bpnet.torch",
            "--target",
            "counts",
            "--out",
            "run",
            "--no-progress",
        ],
    ),
    ("bigwig", ["run", "bigwig", "run", "--out", "relevance.bw"]),
    ("seqlets (JASPAR2024)", ["run", "seqlets", "run", "--out", "seqlets.bed", "--motifs", "JASPAR2024"]),
    ("export-modisco", ["run", "export-modisco", "run"]),
]
COMMANDS.append(("run again (resumed)", COMMANDS[0][1]))


def run(peaks: int = 1000) -> list[tuple[str, float]]:
    """Make the inputs and time each command; returns ``(step, seconds)``."""
    return time_commands(COMMANDS, lambda folder: make_inputs(folder, peaks=peaks))


def print_table(timings: list[tuple[str, float]], peaks: int) -> None:
    """The timings as a table."""
    print_timings(
        f"bpnet-lite job: {peaks} peaks, 2,114 bp windows, BPNet 64 filters x 8 layers (random weights), "
        "each command a new process",
        timings,
    )
