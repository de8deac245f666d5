"""One writer per folder, one kind per folder, nothing lost: concurrent writers, killed writers, full
and read-only disks, users' own files in an output folder.

Full and read-only disks are real: a small tmpfs mounted for the test (skipped, saying why, where
this process may not mount one).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from lrp_domains.bench.data.synthetic import make_dataset, write_fasta
from lrp_domains.cli import app
from lrp_domains.errors import InputError
from lrp_domains.files.lock import LOCK_FILE, FolderLocked, folder_lock
from lrp_domains.files.writing import OUTPUTS_FILE, OutputFolder, read_outputs
from lrp_domains.run import explain_dataset, read_manifest, read_results

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _fasta(path: Path, n: int = 12, seed: int = 3) -> Path:
    return write_fasta(path, make_dataset(n, seed=seed))


def _one_line(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "error: " in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


def _python(script: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(TESTS))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the process ended first: {process.communicate()}")
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# -- the lock ----------------------------------------------------------------------------------------
HOLD = """
import sys, time
from lrp_domains.files.lock import folder_lock
with folder_lock(sys.argv[1]):
    open(sys.argv[2], "w").close()
    time.sleep(120)
"""


@pytest.mark.slow  # a subprocess or a whole dataset: make test runs it, make test-fast does not
def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = _python(HOLD, str(out), str(tmp_path / "held"))
    try:
        _wait_for(tmp_path / "held", holder)
        with pytest.raises(FolderLocked, match=f"process {holder.pid} on {socket.gethostname()}"):
            with folder_lock(out):
                pass
        fasta = _fasta(tmp_path / "in.fa", n=4)
        for command in (
            ["run", "sequences", fasta, "--out", out],
            ["bio", "sequences", fasta, "--out", out, "--motifs", "none"],
        ):
            _one_line(run(*command, "--no-progress"), f"is being written by process {holder.pid}", "one writer")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing else was written
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = _python(HOLD, str(out), str(tmp_path / "held"))
    _wait_for(tmp_path / "held", holder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    left = json.loads((out / LOCK_FILE).read_text())
    assert left["pid"] == holder.pid  # the dead holder's lock file is still there
    with folder_lock(out) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with folder_lock(out):  # re-entrant within a process
            pass
        assert lock.exists()
    assert not (out / LOCK_FILE).exists()


SLOW_RUN = """
import sys, time
import lrp_domains.run.dataset as dataset
from lrp_domains.bio import SequenceExplainer
real = dataset.explain_shard
def slow(*args, **kwargs):
    time.sleep(0.5)
    return real(*args, **kwargs)
dataset.explain_shard = slow
dataset.explain_dataset(SequenceExplainer.default(), sys.argv[1], sys.argv[2], shard_size=3, progress=False)
"""


@pytest.mark.slow  # a subprocess or a whole dataset: make test runs it, make test-fast does not
def test_two_runs_on_one_folder_never_mix(tmp_path):
    """Before: both exited 0, the manifest said genomics and complete, and half the shards held
    epsilon relevance."""
    fasta = _fasta(tmp_path / "in.fa", n=15)
    reference = tmp_path / "reference"
    explain_dataset(_default(), fasta, reference, shard_size=3, progress=False)
    out = tmp_path / "out"
    first = _python(SLOW_RUN, str(fasta), str(out))
    _wait_for(out / "shard-00000.parquet", first)
    second = run(
        "run",
        "sequences",
        fasta,
        "--out",
        out,
        "--shard-size",
        "3",
        "--no-resume",
        "--composite",
        "epsilon",
        "--no-progress",
    )
    _one_line(second, f"is being written by process {first.pid}")
    assert first.wait(timeout=300) == 0, first.communicate()
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["settings"]["composite"] == "genomics"
    pd.testing.assert_frame_equal(read_results(out), read_results(reference))
    assert not (out / LOCK_FILE).exists()


@pytest.mark.slow  # a subprocess or a whole dataset: make test runs it, make test-fast does not
def test_a_killed_run_leaves_a_lock_that_the_next_run_takes_over_and_finishes(tmp_path):
    fasta = _fasta(tmp_path / "in.fa", n=15)
    reference = tmp_path / "reference"
    explain_dataset(_default(), fasta, reference, shard_size=3, progress=False)
    out = tmp_path / "out"
    first = _python(SLOW_RUN, str(fasta), str(out))
    _wait_for(out / "shard-00001.parquet", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == first.pid
    resumed = run("run", "sequences", fasta, "--out", out, "--shard-size", "3", "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    pd.testing.assert_frame_equal(read_results(out), read_results(reference))
    assert not (out / LOCK_FILE).exists()


def _default():
    from lrp_domains.bio import SequenceExplainer

    return SequenceExplainer.default()


# -- one kind per folder, and the user's files -------------------------------------------------------
def test_a_report_never_replaces_the_users_own_files(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("my notes")
    (out / "seqlets.csv").write_text("my table")
    done = run("bio", "sequences", _fasta(tmp_path / "in.fa", n=3), "--out", out, "--motifs", "none", "--no-progress")
    _one_line(done, "report.html", "seqlets.csv", "lrp-domains did not write")
    assert (out / "report.html").read_text() == "my notes" and (out / "seqlets.csv").read_text() == "my table"
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "seqlets.csv"]  # no marker, no lock left


def test_another_kind_of_output_is_refused_and_nothing_is_deleted(tmp_path):
    fasta = _fasta(tmp_path / "in.fa", n=3)
    report = tmp_path / "report"
    assert run("bio", "sequences", fasta, "--out", report, "--motifs", "none", "--no-progress").exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in report.iterdir()}
    genome = tmp_path / "genome.fa"
    genome.write_text(">chr1\n" + "ACGT" * 100 + "\n")
    vcf = tmp_path / "calls.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\nchr1\t200\tv\tA\tC\t.\t.\t.\n")
    variants = run("bio", "variants", "--vcf", vcf, "--fasta", genome, "--out", report, "--motifs", "none")
    _one_line(variants, "holds a sequence-report report", "one kind")
    into_run = run("run", "sequences", fasta, "--out", report, "--no-progress")
    _one_line(into_run, "holds a sequence-report report")
    assert {p.name: p.stat().st_mtime_ns for p in report.iterdir()} == before
    runs = tmp_path / "run"
    assert run("run", "sequences", fasta, "--out", runs, "--no-progress").exit_code == 0
    _one_line(
        run("bio", "sequences", fasta, "--out", runs, "--motifs", "none", "--no-progress"),
        "holds an lrp-domains run (manifest.json)",
    )


KILLED_REPORT = """
import os, signal, sys
import lrp_domains.report.sequences as report
from lrp_domains.bio import SequenceExplainer
real = report.logo
count = [0]
def dying_logo(*args, **kwargs):
    count[0] += 1
    if count[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # killed half-way through the logos
    return real(*args, **kwargs)
report.logo = dying_logo
explainer = SequenceExplainer.default()
report.write_sequence_report(explainer.explain(sys.argv[1]), sys.argv[2])
"""


@pytest.mark.slow  # a subprocess or a whole dataset: make test runs it, make test-fast does not
def test_a_killed_report_is_marked_incomplete_and_the_next_one_repairs_it(tmp_path):
    out = tmp_path / "out"
    killed = _python(KILLED_REPORT, str(_fasta(tmp_path / "a.fa", n=6, seed=1)), str(out))
    assert killed.wait(timeout=300) == -signal.SIGKILL
    marker = json.loads((out / OUTPUTS_FILE).read_text())
    assert marker["state"] == "incomplete" and "report.html" not in marker["files"]
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {OUTPUTS_FILE, LOCK_FILE}
    assert on_disk <= set(marker["files"])  # every file of ours on disk is listed
    old_logos = sorted((out / "logos").glob("*.png"))
    assert len(old_logos) == 2
    with pytest.raises(InputError, match="incomplete sequence-report report"):
        read_outputs(out)
    (out / "logos" / "mine.png").write_bytes(b"user")
    second = _fasta(tmp_path / "b.fa", n=2, seed=2)
    second.write_text(second.read_text().replace(">", ">b_"))  # other ids: other logo names
    again = run("bio", "sequences", second, "--out", out, "--motifs", "none", "--no-progress")
    assert again.exit_code == 0, again.output
    repaired = read_outputs(out)
    assert repaired["state"] == "complete"
    logos = sorted(p.name for p in (out / "logos").glob("*.png"))
    assert len(logos) == 3 and "mine.png" in logos and all(n.startswith("b_") for n in logos if n != "mine.png")
    assert not list(out.rglob("*.tmp"))
    assert set(repaired["files"]) == {
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.parts[len(out.parts)] != "run"
    } - {OUTPUTS_FILE, "logos/mine.png"}


def test_the_marker_lists_a_file_before_it_is_written(tmp_path):
    folder = OutputFolder(tmp_path / "out", "test")
    path = folder.path("table.csv")
    marker = json.loads((tmp_path / "out" / OUTPUTS_FILE).read_text())
    assert marker["state"] == "incomplete" and marker["files"] == ["table.csv"] and not path.exists()
    folder.write_text("table.csv", "x")
    folder.finish()
    assert json.loads((tmp_path / "out" / OUTPUTS_FILE).read_text())["state"] == "complete"


# -- full and read-only disks -----------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 96 KiB tmpfs; yields (its path, a function remounting it with another size or read-only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}): a full and a "
            "read-only disk need one (run the tests as root, as CI does)"
        )

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(disk)], check=True)

    yield disk, remount
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_ends_in_one_line_and_the_run_resumes_after(tmp_path, small_disk):
    disk, remount = small_disk
    fasta = _fasta(tmp_path / "in.fa", n=40)
    reference = tmp_path / "reference"
    explain_dataset(_default(), fasta, reference, shard_size=4, progress=False)
    out = disk / "run"
    full = run("run", "sequences", fasta, "--out", out, "--shard-size", "4", "--no-progress")
    _one_line(full, "No space left on device", "Finished shards are kept")
    manifest = read_manifest(out)  # whole, and listing only shards that are whole
    assert not manifest["complete"] and 0 < len(manifest["shards"]) < 10
    assert all(len(pd.read_parquet(out / e["file"])) == 4 for e in manifest["shards"].values())
    assert not list(out.glob("*.tmp")) and not (out / LOCK_FILE).exists()
    remount("size=20m")
    resumed = run("run", "sequences", fasta, "--out", out, "--shard-size", "4", "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    pd.testing.assert_frame_equal(read_results(out), read_results(reference))


def test_a_report_on_a_full_disk_ends_in_one_line(tmp_path, small_disk):
    disk, _ = small_disk
    done = run(
        "bio",
        "sequences",
        _fasta(tmp_path / "in.fa", n=40),
        "--out",
        disk / "report",
        "--motifs",
        "none",
        "--no-progress",
    )
    _one_line(done, "No space left on device")


def test_a_read_only_disk_is_refused_before_the_work(tmp_path, small_disk):
    disk, remount = small_disk
    remount("ro")
    fasta = _fasta(tmp_path / "in.fa", n=4)
    _one_line(run("run", "sequences", fasta, "--out", disk / "run", "--no-progress"), "choose another --out")
    _one_line(
        run("bio", "sequences", fasta, "--out", disk / "report", "--motifs", "none", "--no-progress"),
        "Read-only file system",
    )


# -- steps that write into a run folder ---------------------------------------------------------------
def test_steps_never_replace_a_users_file_in_the_run_folder(tmp_path):
    fasta = _fasta(tmp_path / "in.fa", n=6)
    out = tmp_path / "run"
    assert run("run", "sequences", fasta, "--out", out, "--shard-size", "3", "--no-progress").exit_code == 0
    (out / "ohe.npy").write_text("my array")
    _one_line(run("run", "export-modisco", out), "ohe.npy exists and was not written by this run")
    assert (out / "ohe.npy").read_text() == "my array" and not (out / "attr.npy").exists()
    (out / "ohe.npy").unlink()
    assert run("run", "export-modisco", out).exit_code == 0
    assert run("run", "export-modisco", out).exit_code == 0  # our own files: replaced
    assert read_manifest(out)["outputs"] == ["attr.npy", "ohe.npy"]
    # a new run in the folder deletes the steps' files made from the old shards, and nothing else
    (out / "notes.npy").write_text("mine")
    again = run("run", "sequences", fasta, "--out", out, "--shard-size", "2", "--no-resume", "--no-progress")
    assert again.exit_code == 0, again.output
    assert not (out / "ohe.npy").exists() and not (out / "attr.npy").exists()
    assert (out / "notes.npy").read_text() == "mine"


def test_reference_examples_table_given_a_folder_is_one_line(tmp_path):
    fasta = _fasta(tmp_path / "in.fa", n=4)
    out = tmp_path / "run"
    done = run("run", "sequences", fasta, "--out", out, "--option", "concepts=0", "--no-progress")
    assert done.exit_code == 0, done.output
    (tmp_path / "folder").mkdir()
    _one_line(run("run", "reference-examples", out, "--table", tmp_path / "folder"), "is a folder; give a file name")
    assert run("run", "reference-examples", out).exit_code == 0
    assert "reference_examples.tsv" in read_manifest(out)["outputs"]
