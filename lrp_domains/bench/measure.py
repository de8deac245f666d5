"""What the benches share to measure: timing in turns (with peak GPU memory, surviving out-of-memory),
peak memory in fresh processes, the agreement of two relevance maps, and passive OpenMP threads."""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

NAN = float("nan")
OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


# -- one call ---------------------------------------------------------------------------------------
def sync(device: torch.device | None = None) -> None:
    """Wait for the GPU's queued work: ``device``'s (nothing on a CPU), or, without a device, that of
    the CUDA context this process started, if any."""
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    elif device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device | None) -> None:
    """Collect garbage and, on CUDA, give the cached blocks back."""
    gc.collect()
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()


def timed_call(
    fn: Callable[[], Any], device: torch.device | None = None, above_start: bool = True
) -> tuple[float, float, Any]:
    """Seconds, peak bytes and the result of one call of ``fn``, synchronised on ``device``.

    Peak bytes: the CUDA allocator's peak during the call, above what was allocated before it
    (``above_start``) or in all; NaN off CUDA."""
    cuda = device is not None and device.type == "cuda"
    sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device) if above_start else 0
    start = time.perf_counter()
    result = fn()
    sync(device)
    seconds = time.perf_counter() - start
    peak = float(torch.cuda.max_memory_allocated(device) - start_bytes) if cuda else NAN
    return seconds, peak, result


def is_out_of_memory(error: BaseException) -> bool:
    """``torch.OutOfMemoryError``, or the RuntimeErrors that CUDA libraries raise when an allocation
    of their own fails near the memory limit (cuBLAS handles, kernels' workspaces)."""
    if isinstance(error, OOM):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text)


def attempt(fn: Callable[[], object], device: torch.device | None) -> tuple[float, float] | None:
    """Seconds and peak bytes of one call (:func:`timed_call`, its result dropped), or None (memory
    freed) when ``fn`` runs out of device memory."""
    failed = False
    try:
        seconds, peak, _ = timed_call(fn, device)
        return seconds, peak
    except RuntimeError as error:  # torch.OutOfMemoryError is a RuntimeError
        if not is_out_of_memory(error):
            raise
        failed = True  # free outside the except block: its traceback holds the frames' tensors
    if failed:
        free(device)
    return None


def fits(fn: Callable[[], object], device: torch.device | None) -> bool:
    """Run ``fn`` once; False (memory freed) when it runs out of device memory."""
    return attempt(fn, device) is not None


# -- methods in turns -------------------------------------------------------------------------------
def measure(
    methods: dict[Any, Callable[[], object]], device: torch.device | None = None, repeats: int = 5, warmup: int = 1
) -> dict[Any, dict[str, Any]]:
    """Median seconds and largest peak bytes (NaN off CUDA) per method, timed in turns (A B C A B C
    ...) after ``warmup`` untimed turns, so that load on a shared machine hits all methods alike;
    synchronised on ``device`` (without one: on the CUDA context this process started, if any). A
    method that runs out of memory is left out of the turns from then on and reported as such
    (``note``)."""
    results: dict[Any, dict[str, Any]] = {}
    running = dict(methods)
    for _ in range(warmup):
        for key, fn in list(running.items()):
            if not fits(fn, device):
                del running[key]
                results[key] = {"seconds": NAN, "peak": NAN, "note": "out of memory"}
    samples: dict[Any, list[tuple[float, float]]] = {key: [] for key in running}
    for _ in range(repeats):
        for key, fn in list(running.items()):
            sample = attempt(fn, device)
            if sample is None:
                del running[key], samples[key]
                results[key] = {"seconds": NAN, "peak": NAN, "note": "out of memory (after its warm-up)"}
            else:
                samples[key].append(sample)
    cuda = device is not None and device.type == "cuda"
    for key, values in samples.items():
        results[key] = {
            "seconds": statistics.median(s for s, _ in values),
            "peak": max(peak for _, peak in values) if cuda else NAN,
            "note": "",
        }
    return {key: results[key] for key in methods if key in results}


def interleaved_times(
    methods: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2, device: torch.device | None = None
) -> dict[str, float]:
    """Median seconds per call of each method, timed in turns (:func:`measure`; synchronised on
    ``device``)."""
    return {name: result["seconds"] for name, result in measure(methods, device, repeats, warmup).items()}


def count_operations(fn: Callable[[], object]) -> int:
    """Top-level ATen operations one call of ``fn`` dispatches (the torch profiler's ``aten::``
    events not inside another ``aten::`` event): what costs a dispatch on a CPU and a kernel
    launch or more on a GPU, independent of the machine's speed and load."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as recorded:
        fn()
    return sum(
        1
        for event in recorded.events()
        if event.name.startswith("aten::")
        and (event.cpu_parent is None or not event.cpu_parent.name.startswith("aten::"))
    )


# -- peak memory in fresh processes -----------------------------------------------------------------
def status_kib(field: str) -> int:
    """A field of ``/proc/self/status`` in KiB (``VmRSS``, ``VmHWM``)."""
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
    base = status_kib("VmRSS")
    fn()
    return (status_kib("VmHWM") - base) * 1024


def peak_bytes(module: str, case: str, method: str, device: str = "cpu", threads: int | None = None) -> int:
    """Run ``python -m module --peak case method device threads`` in a fresh process and return
    its peak bytes."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    done = subprocess.run(
        [sys.executable, "-m", module, "--peak", case, method, device, str(threads or 0)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {case}/{method} failed:\n{done.stderr[-2000:]}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"])


# -- agreement --------------------------------------------------------------------------------------
def row_correlations(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` (first dimension, the rest flattened) with the same row
    of ``b``, in float64 on the CPU, ``(N,)``.

    A constant row correlates 0: the norms' product is clamped at 1e-300, which touches only a zero
    (or underflowing) denominator. A larger floor would not be scale-free: it would shrink the
    correlation of two maps whose values are merely small."""
    a = a.detach().double().cpu()
    b = b.detach().double().cpu()
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of all values of ``a`` with those of ``b`` (:func:`row_correlations` of one row)."""
    return float(row_correlations(a.reshape(1, -1), b.reshape(1, -1))[0])


# -- the process ------------------------------------------------------------------------------------
def reexec_with_passive_threads() -> None:
    """Busy-waiting OpenMP threads distort timings on small shared machines: rerun this process
    with ``OMP_WAIT_POLICY=PASSIVE`` unless it is set (it must be set before torch starts)."""
    if os.environ.get("OMP_WAIT_POLICY"):
        return
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    raise SystemExit(subprocess.call([sys.executable, *sys.argv], env=env))
