"""Timing and peak-memory helpers for the benchmarks: interleaved runs, ratios, fresh processes."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch


def interleaved_times(methods: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each method, timed in turns (A B A B ...) so that load on a
    shared machine hits all methods alike."""
    for _ in range(warmup):
        for fn in methods.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_bytes_here(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory of one call of ``fn`` above what was allocated before it, after a warm-up call.

    CUDA: the allocator's peak. CPU: peak resident set size (``VmHWM``, reset through
    ``/proc/self/clear_refs``); run it in a fresh process with glibc's mmap threshold fixed
    (:func:`peak_bytes`) so that freed tensors leave the resident set.
    """
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    base = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - base) * 1024


def peak_bytes(module: str, case: str, method: str, device: str = "cpu", threads: int | None = None) -> int:
    """Run ``python -m module --peak case method device threads`` in a fresh process and return
    its peak bytes."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    done = subprocess.run(
        [sys.executable, "-m", module, "--peak", case, method, device, str(threads or 0)],
        capture_output=True, text=True, env=env, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {case}/{method} failed:\n{done.stderr[-2000:]}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"])


def reexec_with_passive_threads() -> None:
    """Busy-waiting OpenMP threads distort timings on small shared machines: rerun this process
    with ``OMP_WAIT_POLICY=PASSIVE`` unless it is set (it must be set before torch starts)."""
    if os.environ.get("OMP_WAIT_POLICY"):
        return
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    raise SystemExit(subprocess.call([sys.executable, *sys.argv], env=env))
