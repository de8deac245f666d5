"""A user's job from the command line, timed: each command a new process, start-up included."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["print_timings", "time_commands"]


def time_commands(
    commands: list[tuple[str, list[str]]], make_inputs: Callable[[Path], None]
) -> list[tuple[str, float]]:
    """In a temporary folder filled by ``make_inputs``, run each ``lrp-domains`` command (``(step,
    arguments)``) as its own process, in order; returns ``(step, seconds)``."""
    timings = []
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_inputs(folder)
        for name, args in commands:
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "lrp_domains", *args], cwd=folder, env=env, check=True, capture_output=True
            )
            timings.append((name, time.perf_counter() - start))
    return timings


def print_timings(title: str, timings: list[tuple[str, float]]) -> None:
    """The timings as a Markdown table under ``title``."""
    print(title)
    print("| step | seconds |\n|---|---|")
    for name, seconds in timings:
        print(f"| {name} | {seconds:.1f} |")
