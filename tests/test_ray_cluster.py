"""A Ray run across a real two-node cluster on this machine survives losing a node (issue #17).

Two ``ray start`` processes (a head and a second node, each with its own temporary folder and one
CPU), a driver process running ``explain_dataset(engine="ray")`` with one actor per node, and the
second node killed (SIGKILL, every process of it at once) while it explains a shard. The run must
finish on the head, or, where the head has no CPU for an actor, stop with the one-line message
that says to run again with --resume; either way a resumed run equals an uninterrupted local run
row for row. Only the processes these tests start are ever killed, by their ids (never
``ray stop``, which stops every Ray on the machine), and the tests check none is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.cluster

ray = pytest.importorskip("ray", reason="the two-node cluster test needs Ray (lrp-domains[distributed])")
import psutil  # noqa: E402  (Ray ships psutil in ray/thirdparty_files and puts it on sys.path)

from lrp_domains.bench.data.synthetic import make_dataset, write_fasta  # noqa: E402
from lrp_domains.domains import build_explainer  # noqa: E402
from lrp_domains.run import explain_dataset, read_manifest, read_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N, SHARD_SIZE = 200, 10
SHARDS = N // SHARD_SIZE
FINISHED, STOPPED = 0, 3  # the driver's exit statuses
MARKER = "LRP_DOMAINS_TEST_RAY_CLUSTER"  # in the environment of every process of a test cluster

# The driver: joins the cluster, waits for both nodes, runs 2 actors (one per node: each node has
# one CPU). Each shard takes 0.3 s longer than it would (the explainer's own class and settings
# are untouched, so a local run can resume the folder), so the run lasts a few seconds.
DRIVER = """
import sys, time
import ray
from lrp_domains.domains import build_explainer
from lrp_domains.run import explain_dataset, ray_engine

def factory():
    explainer = build_explainer("sequences")
    explain_rows = explainer.explain_rows
    def slow(*args, **kwargs):
        time.sleep(0.3)
        return explain_rows(*args, **kwargs)
    explainer.explain_rows = slow
    return explainer

source, out, address, shard_size, stopped = sys.argv[1:6]
ray_engine.NODE_WAIT_S = 2.0
ray.init(address=address, log_to_driver=False)
deadline = time.time() + 60
while sum(node["Alive"] for node in ray.nodes()) < 2:
    assert time.time() < deadline, "the second node did not join"
    time.sleep(0.2)
try:
    explain_dataset(factory, source, out, shard_size=int(shard_size), progress=False, engine="ray", num_workers=2)
except ray_engine.RayWorkersLost as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(int(stopped))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tree(process: psutil.Process | int) -> list[psutil.Process]:
    """A process and all its descendants (those alive now)."""
    try:
        process = psutil.Process(process) if isinstance(process, int) else process
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _ours(root: Path) -> list[psutil.Process]:
    """Every process of our cluster, wherever it was re-parented: Ray's processes inherit our
    marker variable (and most name our temporary folder on their command line)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(str(root) in part for part in process.info["cmdline"] or []) or process.environ().get(MARKER) == str(
                root
            ):
                found.append(process)
    return found


def _kill(processes: list[psutil.Process]) -> None:
    """SIGKILL, all at once (a test cluster has nothing to save), and wait for them to go."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive, f"could not stop {[p.pid for p in alive]}"


class Cluster:
    """A head and a second node, started with ``ray start --block`` in their own sessions."""

    def __init__(self, root: Path, head_cpus: int) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # A token only these processes know (no ~/.ray/auth_token is read or written).
        self.env = dict(
            os.environ,
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=secrets.token_hex(32),
            RAY_USAGE_STATS_ENABLED="0",
            OMP_NUM_THREADS="1",
            **{MARKER: str(root)},
        )
        self.env.pop("RAY_ADDRESS", None)
        self.head = self._start(
            "head",
            "--head",
            f"--port={self.port}",
            f"--num-cpus={head_cpus}",
            '--resources={"head": 1}',
            "--include-dashboard=false",
            # a dead node is declared so after ~1.5 s, not Ray's ~15 s: a quick test
            '--system-config={"health_check_period_ms": 500, "health_check_timeout_ms": 500, '
            '"health_check_failure_threshold": 3}',
        )
        self._wait_for_head()
        self.worker = self._start("worker", f"--address={self.address}", "--num-cpus=1", '--resources={"worker": 1}')

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        ports = [
            f"--{option}={_free_port()}"
            for option in (
                "node-manager-port",
                "object-manager-port",
                "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port",
                "runtime-env-agent-port",
                "metrics-export-port",
            )
        ]  # two nodes on one machine: no default port twice
        log = (self.root / f"{name}.log").open("w")
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ray.scripts.scripts",
                "start",
                "--block",
                f"--temp-dir={self.root / name}",
                "--object-store-memory=80000000",
                "--disable-usage-stats",
                *ports,
                *args,
            ],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_for_head(self) -> None:
        deadline = time.time() + 60
        while True:
            assert self.head.poll() is None, f"ray start --head failed:\n{self.log('head')}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            assert time.time() < deadline, f"the head did not start:\n{self.log('head')}"
            time.sleep(0.2)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-3000:]

    def explaining_on_worker(self) -> bool:
        """Whether an actor on the second node is inside a shard (Ray titles the process so)."""
        for process in _tree(self.worker.pid):
            with contextlib.suppress(psutil.Error):
                if " ".join(process.cmdline()).startswith("ray::_ShardExplainer.explain"):
                    return True
        return False

    def kill_worker_node(self) -> list[str]:
        """SIGKILL every process of the second node at once, as when a machine dies."""
        processes = _tree(self.worker.pid)
        names = []
        for process in processes:
            with contextlib.suppress(psutil.Error):
                names.append(process.name())
        _kill(processes)
        assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        return names

    def stop(self) -> None:
        """Stop both nodes: our processes only, by id, all found before any is killed (a raylet's
        agents outlive it, re-parented)."""
        found = {p.pid: p for p in _tree(self.worker.pid) + _tree(self.head.pid) + _ours(self.root)}
        _kill(list(found.values()))
        for popen in (self.worker, self.head):
            popen.wait(timeout=10)


@pytest.fixture
def cluster_factory():
    """Start clusters on request; stop them and delete their folders in any case."""
    started: list[Cluster] = []
    roots: list[Path] = []

    def start(head_cpus: int) -> Cluster:
        # A short folder: Ray's Unix socket paths (inside it) must stay under ~107 characters.
        root = Path(tempfile.mkdtemp(prefix="lrp-ray-", dir="/tmp" if Path("/tmp").is_dir() else None))
        roots.append(root)
        started.append(Cluster(root, head_cpus))
        return started[-1]

    try:
        yield start
    finally:
        try:
            for cluster in started:
                cluster.stop()
        finally:  # whatever stop() missed, or a cluster that failed to start: found by its marker
            for root in roots:
                left = _ours(root)
                _kill(left)
                shutil.rmtree(root, ignore_errors=True)
                assert not left, f"processes left behind: {[p.pid for p in left]}"


def _shards_done(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0  # not written yet, or being replaced


def _assert_equal_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.row) == list(range(N))  # none lost, none duplicated
    assert list(got.id) == list(expected.id)
    assert list(got.columns) == list(expected.columns)
    for column in got.columns:
        if isinstance(got[column].iloc[0], (np.ndarray, list)):
            for a, b in zip(got[column].map(np.asarray), expected[column].map(np.asarray)):
                if b.dtype.kind == "f":
                    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=column)
                else:
                    assert a.tolist() == b.tolist(), column
        elif got[column].dtype.kind == "f":
            np.testing.assert_allclose(got[column], expected[column], rtol=1e-5, atol=1e-6, err_msg=column)
        else:
            assert list(got[column]) == list(expected[column]), column


@pytest.mark.parametrize("head_cpus, outcome", [(1, FINISHED), (0, STOPPED)], ids=["head-takes-over", "no-node-left"])
def test_ray_run_survives_losing_a_node_and_resumes_to_the_local_result(tmp_path, cluster_factory, head_cpus, outcome):
    source = write_fasta(tmp_path / "in.fa", make_dataset(N, seed=11))
    reference = tmp_path / "local"
    explain_dataset(build_explainer("sequences"), source, reference, shard_size=SHARD_SIZE, progress=False)
    expected = read_results(reference)

    cluster = cluster_factory(head_cpus)
    out = tmp_path / "ray"
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    began = time.time()
    with (tmp_path / "driver.log").open("w") as log:  # a file, not a pipe that could fill up
        driver = subprocess.Popen(
            [
                sys.executable,
                str(tmp_path / "driver.py"),
                str(source),
                str(out),
                cluster.address,
                str(SHARD_SIZE),
                str(STOPPED),
            ],
            env=cluster.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def output() -> str:
        return (tmp_path / "driver.log").read_text(errors="replace")

    try:
        # Kill the second node inside a shard, once the run is under way (shards written by the
        # head's actor, or, with a CPU-less head, by the second node's).
        deadline = time.time() + 120
        while not (_shards_done(out) >= 2 and cluster.explaining_on_worker()):
            assert driver.poll() is None, f"the run ended before the node was killed:\n{output()}"
            assert time.time() < deadline, "the run did not get under way on both nodes"
            time.sleep(0.02)
        before, killed_at = _shards_done(out), time.time() - began
        killed = cluster.kill_worker_node()
        assert "raylet" in killed
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    stderr = output()
    after = read_manifest(out)
    print(
        f"head CPUs {head_cpus}: killed the second node ({len(killed)} processes) at {killed_at:.1f} s, after "
        f"{before} of {SHARDS} shards; the driver ended with status {driver.returncode} after "
        f"{time.time() - began:.1f} s, {len(after['shards'])} shards written"
    )
    if outcome == FINISHED:
        assert driver.returncode == FINISHED, stderr
        assert after["complete"] and len(after["shards"]) == SHARDS
        assert "lost a Ray worker" in stderr  # the second node's shards went to the head's actor
    else:
        assert driver.returncode == STOPPED, stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]  # (Ray logs there too)
        assert len(errors) == 1, stderr
        message = errors[0]
        assert message.startswith("error: the Ray cluster has no node left that can run a worker (needs 1 CPU"), stderr
        assert "--resume" in message and "shards to do are written" in message
        assert not after["complete"] and before <= len(after["shards"]) < SHARDS
    assert not list(out.glob("*.tmp"))
    for entry in after["shards"].values():  # whatever is listed is whole
        assert len(pd.read_parquet(out / entry["file"])) == SHARD_SIZE

    # Resuming (the local engine, no Ray) completes the folder to the uninterrupted local run's rows.
    explain_dataset(build_explainer("sequences"), source, out, shard_size=SHARD_SIZE, progress=False)
    resumed = read_manifest(out)
    assert resumed["complete"] and sorted(map(int, resumed["shards"])) == list(range(SHARDS))
    assert resumed["shards"] == read_manifest(reference)["shards"]
    _assert_equal_rows(read_results(out), expected)
