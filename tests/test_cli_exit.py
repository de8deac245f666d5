"""A finished command ends without the interpreter's teardown (about a second of every cold start
once torch is loaded), and still does everything a normal exit does: exit handlers run, output is
flushed, folder locks are given back, threads a normal exit waits for are waited for."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from lrp_domains.files.lock import LOCK_FILE
from lrp_domains.files.writing import OUTPUTS_FILE


def _python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def test_exit_handlers_run_and_output_is_flushed(tmp_path):
    mark = tmp_path / "atexit.txt"
    done = _python(
        f"""
        import atexit, sys
        atexit.register(lambda: open({str(mark)!r}, "w").write("ran"))
        sys.argv = ["lrp-domains", "composites"]
        print("before", end="")  # unflushed: a pipe is block-buffered
        from lrp_domains.cli import _may_exit_fast, main
        import torch  # noqa: F401  (what makes the fast exit apply)
        sys.stderr.write(str(_may_exit_fast()))
        main()
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("True")  # the fast exit was taken
    assert done.stdout.startswith("before") and "epsilon:" in done.stdout  # everything printed arrived
    assert mark.read_text() == "ran"


def test_a_running_thread_is_waited_for_as_at_a_normal_exit(tmp_path):
    mark = tmp_path / "thread.txt"
    done = _python(
        f"""
        import sys, threading, time
        def late():
            time.sleep(0.5)
            open({str(mark)!r}, "w").write("finished")
        threading.Thread(target=late).start()
        sys.argv = ["lrp-domains", "composites"]
        from lrp_domains.cli import main
        main()
        """
    )
    assert done.returncode == 0, done.stderr
    assert mark.read_text() == "finished"


def test_a_failing_command_keeps_its_exit_code():
    done = _python(
        """
        import sys
        sys.argv = ["lrp-domains", "text", "explain", "   "]
        from lrp_domains.cli import main
        main()
        """
    )
    assert done.returncode != 0
    assert "empty" in (done.stderr + done.stdout).lower()


@pytest.mark.slow  # a subprocess writing a report: make test runs it, make test-fast does not
def test_a_report_folder_is_complete_and_unlocked_after_a_fast_exit(tmp_path):
    out = tmp_path / "sequences"
    argv = [sys.executable, "-m", "lrp_domains", "bio", "sequences", "--out", str(out), "--motifs", "none"]
    for _ in range(2):  # the second run finds the folder free and its own outputs complete
        done = subprocess.run([*argv, "--no-progress"], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert not (out / LOCK_FILE).exists()
        marker = json.loads((out / OUTPUTS_FILE).read_text())
        assert marker["state"] == "complete", marker
        for name in marker["files"]:
            assert (out / name).stat().st_size > 0, name
