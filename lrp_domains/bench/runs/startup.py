"""``lrp-domains bench startup``: the start-up a person feels, in fresh processes.

Each command runs as its own process, the way a person types it (the ``lrp-domains`` console
script of this interpreter's environment), ``repeats`` times in turns (A B C A B C ...) so that
load on a shared machine hits all commands alike; the table gives the median wall-clock seconds
from starting the process to its exit, and the targets of issue #17: ``--help`` under 0.5 s, one
sentence explained from a cold start under 5 s. Beside them, the floor under that sentence: a
process that imports torch and transformers' BERT and does nothing else.

"Cold" means a fresh Python process (nothing imported, no model loaded). The operating system's
file cache is not emptied (that needs root and would measure the disk): one untimed round runs
first, so every timed run reads the installed packages and weights from memory. The column
``first`` is that warm-up round, the nearest to a cold file cache when the bench starts on a
machine that has not run the commands lately.

This module imports neither torch nor the CLI: it only starts processes.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Seconds a person should wait at most (issue #17): help screens, and one sentence explained.
HELP_TARGET = 0.5
EXPLAIN_TARGET = 5.0


def _cli() -> list[str]:
    """The ``lrp-domains`` console script next to this interpreter, else ``python -m lrp_domains``."""
    script = shutil.which("lrp-domains", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "lrp_domains"]


def cases(out_dir: Path, sequences: bool = True) -> list[dict]:
    """The measured commands: name, argv, target seconds (None: no target)."""
    cli = _cli()
    found = [
        {"name": "python: pass", "argv": [sys.executable, "-c", "pass"], "target": None},
        {"name": "python: import lrp_domains", "argv": [sys.executable, "-c", "import lrp_domains"], "target": None},
        {
            # the floor under one sentence explained: what importing torch and transformers' BERT
            # costs before anything of ours runs (it is most of the cold start)
            "name": "python: import torch + transformers BERT",
            "argv": [sys.executable, "-c", "import torch, transformers.models.bert.modeling_bert"],
            "target": None,
        },
        {"name": "--help", "argv": [*cli, "--help"], "target": HELP_TARGET},
        {"name": "text --help", "argv": [*cli, "text", "--help"], "target": HELP_TARGET},
        {"name": "bio --help", "argv": [*cli, "bio", "--help"], "target": HELP_TARGET},
        {"name": "run --help", "argv": [*cli, "run", "--help"], "target": HELP_TARGET},
        {
            "name": 'text explain "one sentence"',
            "argv": [*cli, "text", "explain", "one sentence"],
            "target": EXPLAIN_TARGET,
        },
    ]
    if sequences:
        found.append(
            {
                "name": "bio sequences (example)",
                "argv": [
                    *cli,
                    "bio",
                    "sequences",
                    "--out",
                    str(out_dir / "sequences"),
                    "--motifs",
                    "none",
                    "--no-progress",
                ],
                "target": None,
            }
        )
    return found


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit status {done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def run(repeats: int = 5, sequences: bool = True, passive_threads: bool = False) -> list[dict]:
    """Median seconds of each command over ``repeats`` fresh processes, timed in turns, after one
    untimed round (reported as ``first``).

    ``passive_threads`` sets ``OMP_WAIT_POLICY=PASSIVE`` for the commands: on a small machine
    shared with other work, busy-waiting OpenMP threads slow every small torch operation (the
    default model's adapter merge, the explanation); a person's own machine is rarely like that.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    env = dict(os.environ)
    if passive_threads:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    with tempfile.TemporaryDirectory(prefix="lrp-bench-startup-") as tmp:
        measured = cases(Path(tmp), sequences=sequences)
        first = {case["name"]: _time(case["argv"], env) for case in measured}
        samples: dict[str, list[float]] = {case["name"]: [] for case in measured}
        for _ in range(repeats):
            for case in measured:
                samples[case["name"]].append(_time(case["argv"], env))
    return [
        {
            "command": case["name"],
            "median_s": statistics.median(samples[case["name"]]),
            "min_s": min(samples[case["name"]]),
            "max_s": max(samples[case["name"]]),
            "first_s": first[case["name"]],
            "target_s": case["target"],
            "repeats": repeats,
            "omp_wait_policy": env.get("OMP_WAIT_POLICY", "unset"),
        }
        for case in measured
    ]


def print_table(rows: list[dict]) -> None:
    """The medians next to their targets, and what the numbers mean."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"bench startup: lrp-domains COMMAND in fresh processes, seconds, median of "
        f"{rows[0]['repeats'] if rows else 0}, interleaved",
        box=box.SIMPLE_HEAD,
    )
    for column in ("command", "median", "min", "max", "first", "target", "meets"):
        if column == "command":
            table.add_column(column, no_wrap=True)
        else:
            table.add_column(column, justify="right", min_width=len(column))
    for row in rows:
        target = row["target_s"]
        meets = "" if target is None else ("yes" if row["median_s"] < target else "no")
        table.add_row(
            row["command"],
            f"{row['median_s']:.2f}",
            f"{row['min_s']:.2f}",
            f"{row['max_s']:.2f}",
            f"{row['first_s']:.2f}",
            "" if target is None else f"{target:g}",
            meets,
        )
    console = Console()
    if not console.is_terminal:  # piped or redirected: every column whole rather than 80 columns
        console = Console(width=120)
    console.print(table)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    policy = rows[0]["omp_wait_policy"] if rows else "unset"
    print(
        f"{os.cpu_count()} CPUs, load average {load}; the commands ran with OMP_WAIT_POLICY={policy}.\n"
        "Cold: a fresh process, nothing imported, no model loaded. The OS file cache is warm for every timed\n"
        "run ('first': the untimed round before them). bio sequences: the example FASTA, --motifs none."
    )
