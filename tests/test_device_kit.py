"""``workflows/device/gpu_check.sh``, the prepared device check of issue #27, run here with
``GPU_CHECK_TINY=1`` (every step with --tiny on the CPU): each step writes its output file, a step
that fails is said and fails the script, and the next steps still run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "workflows" / "device" / "gpu_check.sh"

pytest.importorskip("bpnetlite")
pytest.importorskip("tangermeme")


def run_check(tmp_path: Path, steps: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        GPU_CHECK_TINY="1",
        GPU_CHECK_INSTALL="0",
        GPU_CHECK_PYTHON=sys.executable,
        GPU_CHECK_STEPS=steps,
        OUT=str(tmp_path),
    )
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_device_check_runs_its_steps_and_says_which_failed(tmp_path):
    done = run_check(tmp_path, "nonsense genome")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "unknown step nonsense" in done.stdout
    # the step after the failed one ran: the genome-scale table, on the CPU, in its file
    table = (tmp_path / "genome.txt").read_text()
    assert "genome scale on cpu" in table and "deep_lift_shap, 20 shuffles" in table
    assert "torch" in (tmp_path / "device.txt").read_text()
    assert run_check(tmp_path, "genome").returncode == 0
    # the batch-one step, its table on the CPU: the graph plan and the general engine
    assert run_check(tmp_path, "batch-one").returncode == 0
    table = (tmp_path / "batch-one.txt").read_text()
    assert "bench batch-one: batch 1, cpu" in table and "genomics (general engine)" in table
