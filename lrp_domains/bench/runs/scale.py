"""``lrp-domains bench scale``: dataset-scale throughput and memory of ``explain_dataset``.

Input: synthetic FASTA (``lrp_domains.bench.data.synthetic``, 200 bp) explained by the default sequence
CNN, or SST-2 dev sentences (repeated to the size asked) explained by the default sentiment model.
Throughput: items per second of whole runs (indexing, reading, explaining, writing Parquet and
the manifest) of the local engine (all threads, and 1 thread) and of the Ray engine with 1 and 2
actors (1 thread each) on the same input, timed in turns; the Ray cluster is started before the
clock, the actors (each loading the model) inside it. Memory: peak resident memory of a local run
on 1x and 10x the input, each in a fresh process, above the memory held once the model is loaded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any


def ray_missing() -> str | None:
    """None when Ray Data imports, else what to install."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return 'bench scale needs Ray Data: pip install "lrp-domains[distributed]"'
    return None


def write_input(kind: str, n: int, path: Path) -> Path:
    """An input file of ``n`` items for ``kind`` (``sequences`` or ``text``)."""
    if kind == "sequences":
        from lrp_domains.bench.data.synthetic import make_dataset, write_fasta

        return write_fasta(path.with_suffix(".fa"), make_dataset(n, seed=11))
    from lrp_domains.bench.text.faithfulness import sst2_dev

    sentences, _ = sst2_dev()
    lines = [sentences[i % len(sentences)] for i in range(n)]
    target = path.with_suffix(".txt")
    target.write_text("\n".join(lines) + "\n")
    return target


def _timed_run(factory: Any, source: Path, out: Path, engine: str, workers: int, shard_size: int) -> float:
    from lrp_domains.run import explain_dataset

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    explain_dataset(factory, source, out, shard_size=shard_size, progress=False, engine=engine, num_workers=workers)
    return time.perf_counter() - start


def throughput(kind: str, n: int, shard_size: int, repeats: int) -> tuple[dict[str, float], float]:
    """Items per second per engine (median over ``repeats`` interleaved runs) and Ray's start-up seconds."""
    import ray
    import torch

    from lrp_domains.domains import build_explainer

    factory = partial(build_explainer, kind)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ray_start = time.perf_counter() - start
    explainer = factory()  # the local engine gets a loaded model, as a user's script would have
    with tempfile.TemporaryDirectory() as folder:
        source = write_input(kind, n, Path(folder) / "input")
        out = Path(folder) / "out"
        runs: dict[str, Any] = {
            f"local ({threads} threads)": lambda: _timed_run(explainer, source, out, "local", 1, shard_size),
            "local (1 thread)": lambda: _single_thread(
                lambda: _timed_run(explainer, source, out, "local", 1, shard_size)
            ),
            "ray, 1 actor": lambda: _timed_run(factory, source, out, "ray", 1, shard_size),
            "ray, 2 actors": lambda: _timed_run(factory, source, out, "ray", 2, shard_size),
        }
        _timed_run(explainer, source, out, "local", 1, shard_size)  # warm-up
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):
            for name, run in runs.items():
                seconds[name].append(run())
    ray.shutdown()
    return {name: n / statistics.median(values) for name, values in seconds.items()}, ray_start


def _single_thread(fn: Any) -> float:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def peak_of_run(kind: str, n: int, shard_size: int) -> dict[str, float]:
    """In this process: build the explainer and the input, then run locally; peak RSS above the start."""
    from lrp_domains.bench.measure import status_kib
    from lrp_domains.domains import build_explainer
    from lrp_domains.run import explain_dataset

    explainer = build_explainer(kind)
    with tempfile.TemporaryDirectory() as folder:
        source = write_input(kind, n, Path(folder) / "input")
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset the high-water mark: measure the run, not the imports and the model
        base = status_kib("VmRSS")
        explain_dataset(explainer, source, Path(folder) / "out", shard_size=shard_size, progress=False)
        return {"peak_mib": (status_kib("VmHWM") - base) / 1024, "input_mib": source.stat().st_size / 2**20}


def peak_in_fresh_process(kind: str, n: int, shard_size: int) -> dict[str, float]:
    """:func:`peak_of_run` in a fresh Python process (glibc returns freed memory at once)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    done = subprocess.run(
        [sys.executable, "-m", __name__, "--peak", kind, str(n), str(shard_size)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(
    kind: str = "sequences", n: int = 2000, shard_size: int = 250, repeats: int = 2, scale: int = 10
) -> dict[str, Any]:
    """Throughput per engine and peak memory at 1x and ``scale`` x the input."""
    rates, ray_start = throughput(kind, n, shard_size, repeats)
    memory = {
        f"{factor}x ({n * factor} items)": peak_in_fresh_process(kind, n * factor, shard_size) for factor in (1, scale)
    }
    return {"kind": kind, "n": n, "shard_size": shard_size, "rates": rates, "ray_start": ray_start, "memory": memory}


def print_table(result: dict[str, Any]) -> None:
    """Print throughput (with ratios to the local engine) and peak memory (with the 10x / 1x ratio)."""
    rates = result["rates"]
    local = next(iter(rates.values()))
    print(
        f"{result['kind']}: {result['n']} items, shards of {result['shard_size']}; "
        f"Ray cluster start-up (not timed below): {result['ray_start']:.1f} s"
    )
    print(f"{'engine':<22}{'items/s':>10}{'/ local':>9}")
    for name, rate in rates.items():
        print(f"{name:<22}{rate:>10.1f}{rate / local:>8.2f}x")
    print(f"\n{'input':<24}{'input MiB':>10}{'peak MiB':>10}")
    peaks = list(result["memory"].items())
    for name, probe in peaks:
        print(f"{name:<24}{probe['input_mib']:>10.1f}{probe['peak_mib']:>10.1f}")
    print(
        f"peak memory {peaks[-1][0].split()[0]} / {peaks[0][0].split()[0]}: "
        f"{peaks[-1][1]['peak_mib'] / peaks[0][1]['peak_mib']:.2f}x"
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--peak":
        print(json.dumps(peak_of_run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
