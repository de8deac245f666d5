"""The Ray engine: the same shards, explained by a pool of Ray actors, surviving lost nodes.

Each actor builds the explainer once (from a picklable factory), reads its shards from the input
file itself (the file must be reachable at the same path on every node: a shared file system)
and returns their rows; only the driver writes shards and the manifest, exactly as the local
engine does (each shard to a temporary name, renamed when whole), so the output, resuming and the
manifest are the same. Joins ``address`` / ``RAY_ADDRESS`` when given, else starts a local cluster
with ``num_workers`` CPUs. Optional dependency: Ray (``pip install "lrp-domains[distributed]"``).

Fault tolerance is ours, not Ray's retries: the driver hands each actor one shard at a time (and
queues one more), and when an actor is lost (its node died or was preempted, its process was
killed) its shards go back to the front of the queue for the other actors, and a replacement actor
is started, which Ray places wherever a node has room. A shard's rows come back whole from one
call, and the driver keeps the first result per shard and drops any other, so a shard is written
once, never partly, never twice. The run stops with :class:`RayWorkersLost`, one line that says to
run again with ``--resume`` (the finished shards are kept), when the cluster is left without a
node able to run an actor for ``NODE_WAIT_S`` seconds, when actors keep dying before finishing any
shard, or, after the other shards are done, when a shard lost its worker ``MAX_ATTEMPTS`` times.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd

from lrp_domains.domains import Reader
from lrp_domains.errors import InputError
from lrp_domains.files.formats import Shard

_log = logging.getLogger(__name__)

#: Tries per shard whose worker is lost (its node died, its process was killed) before the run stops.
MAX_ATTEMPTS = 3
#: Seconds to wait, once every actor is lost, for a node with room for one before the run stops.
NODE_WAIT_S = 60.0
#: Shards queued per actor (one running, one waiting), so an actor never idles between calls.
IN_FLIGHT = 2


class RayWorkersLost(RuntimeError):
    """The Ray cluster lost the workers of a run and cannot finish it; the finished shards are
    written and listed, and the message says to run again with ``--resume``."""


class _ShardExplainer:
    """A Ray actor: loads the explainer once, then explains one shard per call."""

    def __init__(self, factory: Callable[[], Any], path: str, column: str | None, options: dict) -> None:
        # An exception here would reach the driver only as text (Ray's ActorDiedError): keep it
        # for ``ready`` to raise, which hands the driver the exception itself.
        self.failed: BaseException | None = None
        try:
            import torch

            torch.set_num_threads(1)  # one actor per core
            self.explainer = factory()
            named = getattr(factory, "keywords", {}).get("device")  # the command line's --device
            if named is None and torch.cuda.is_available():
                # Ray gave this actor a GPU and no device was named: the explainers follow the model's device
                self.explainer.model.to("cuda")
            self.reader = self.explainer.reader(path, column)
            self.options = options
        except Exception as error:
            self.failed = error

    def ready(self) -> None:
        """Return once the explainer is built; raise what building it raised."""
        if self.failed is not None:
            raise self.failed

    def explain(self, shard: Shard) -> pd.DataFrame:
        from lrp_domains.run.dataset import explain_shard

        return explain_shard(self.explainer, self.reader, shard, self.options)


def require_ray() -> None:
    """Raise a clear ImportError when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError as error:
        raise ImportError('the Ray engine needs Ray: pip install "ray[data]" (or lrp-domains[distributed])') from error


#: Seconds to wait for a Ray cluster's address to answer before the run stops.
CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """An InputError naming ``address`` when nothing accepts a connection there within ``timeout``
    seconds (``ray.init`` would wait for minutes). ``auto``, ``local`` and addresses without a port
    are Ray's to resolve."""
    import socket

    hostport = address.strip().split("://", 1)[-1].rstrip("/")
    host, sep, port_text = hostport.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        return
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, socket.timeout) else (error.strerror or str(error))
        raise InputError(
            f"--address {address}: no Ray cluster answers there ({reason}); start one with "
            "`ray start --head` on that machine, or check the host and port (RAY_ADDRESS too)"
        ) from None


def run_on_ray(
    factory: Callable[[], Any],
    reader: Reader,
    column: str | None,
    shards: list[Shard],
    options: dict,
    num_workers: int,
    address: str | None = None,
) -> Iterator[tuple[Shard, pd.DataFrame]]:
    """Yield ``(shard, rows)`` for every shard, each exactly once, as the actors finish them (not
    necessarily in input order); raise :class:`RayWorkersLost` when the cluster cannot finish."""
    require_ray()
    import ray

    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            check_reachable(address)
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(
                num_cpus=max(num_workers, 1),
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
            started = True
    try:
        if shards:
            yield from _Pool(factory, reader, column, options, max(num_workers, 1)).run(shards)
    finally:
        if started:
            ray.shutdown()


class _Pool:
    """The driver's side: actors, the queue of shards, and what to do when an actor is lost."""

    def __init__(
        self, factory: Callable[[], Any], reader: Reader, column: str | None, options: dict, size: int
    ) -> None:
        import ray
        import torch

        self.need = {"CPU": 1.0, **({"GPU": 1.0} if torch.cuda.is_available() else {})}
        # Restarts and task retries are ours (a fresh actor, the shard to another actor): Ray's
        # own would send a lost shard back to the same actor, which may never come back.
        # An ActorClass (Any: ray's annotations type ray.remote(...)(cls) as a plain function).
        self.remote: Any = ray.remote(num_cpus=1, num_gpus=self.need.get("GPU", 0), max_restarts=0, max_task_retries=0)(
            _ShardExplainer
        )
        self.arguments = (factory, getattr(reader, "source", str(reader.path)), column, options)
        self.size = size
        self.actors: list[Any] = []  # every actor started, to kill them all at the end
        self.alive: set[Any] = set()  # started and not lost
        self.starting: dict[Any, Any] = {}  # ready() call -> actor
        self.ready: dict[Any, list[Any]] = {}  # actor -> its explain() calls, oldest (the running one) first
        self.running: dict[Any, tuple[Any, Shard]] = {}  # explain() call -> (actor, shard)
        self.queue: deque[Shard] = deque()
        self.attempts: dict[int, int] = {}  # shard index -> workers lost while it ran
        self.given_up: dict[int, str] = {}  # shard index -> why (it lost its worker MAX_ATTEMPTS times)
        self.lost = 0  # actors lost since a shard last finished

    def _start_actor(self) -> None:
        actor = self.remote.remote(*self.arguments)
        self.actors.append(actor)
        self.alive.add(actor)
        self.starting[actor.ready.remote()] = actor

    def _dispatch(self) -> None:
        for actor, calls in self.ready.items():  # fill the first actors' queues first
            while self.queue and len(calls) < IN_FLIGHT:
                shard = self.queue.popleft()
                call = actor.explain.remote(shard)
                self.running[call] = (actor, shard)
                calls.append(call)

    def _lose(self, actor: Any, why: BaseException) -> None:
        """Retire a lost actor, put its shards back at the front of the queue (charging a try to
        the one it was running only) and start another actor in its place."""
        import ray

        if actor not in self.alive:
            return
        self.alive.discard(actor)
        self.starting = {call: a for call, a in self.starting.items() if a is not actor}
        calls = self.ready.pop(actor, [])
        ray.kill(actor, no_restart=True)  # one that is only unreachable must not come back: its shards are requeued
        for position in reversed(range(len(calls))):
            _, shard = self.running.pop(calls[position])
            if position == 0:  # the shard it was running; the others were waiting their turn
                self.attempts[shard.index] = self.attempts.get(shard.index, 0) + 1
                if self.attempts[shard.index] >= MAX_ATTEMPTS:
                    self.given_up[shard.index] = (
                        f"shard {shard.index} (rows {shard.start} to {shard.stop - 1}) lost "
                        f"its Ray worker {MAX_ATTEMPTS} times (last: {_first_line(why)})"
                    )
                    continue
            self.queue.appendleft(shard)
        self.lost += 1
        _log.warning(
            "lrp-domains: lost a Ray worker (%s); its shards go to the other workers, and a new one is "
            "starting wherever a node has room",
            _first_line(why),
        )
        if self.lost > MAX_ATTEMPTS * (self.size + 1):  # (a dying node fails some replacements too)
            raise RayWorkersLost(
                f"{self.lost} Ray workers were lost without finishing a shard (last: {_first_line(why)}). {_RESUME}"
            )
        self._start_actor()

    def run(self, shards: list[Shard]) -> Iterator[tuple[Shard, pd.DataFrame]]:
        import ray
        from ray.exceptions import RayTaskError

        lost_errors = _lost_errors()
        self.queue.extend(shards)
        written: set[int] = set()
        no_room_since: float | None = None
        try:
            for _ in range(self.size):
                self._start_actor()
            while len(written) + len(self.given_up) < len(shards):
                self._dispatch()
                done, _ = ray.wait([*self.running, *self.starting], num_returns=1, timeout=1.0)
                for call in done:
                    if call in self.starting:
                        actor = self.starting.pop(call)
                        try:
                            ray.get(call)
                        except RayTaskError as error:  # building the explainer failed: it would everywhere
                            _raise_cause(error)
                        except lost_errors as error:
                            self._lose(actor, error)
                        else:
                            if actor in self.alive:
                                self.ready[actor] = []
                    elif call in self.running:  # (not requeued meanwhile, with the rest of a lost actor's)
                        actor, shard = self.running[call]
                        try:
                            rows = ray.get(call)
                        except RayTaskError as error:
                            _raise_cause(error)
                        except lost_errors as error:
                            self._lose(actor, error)
                            continue
                        del self.running[call]
                        self.ready[actor].remove(call)
                        self.lost = 0
                        if shard.index not in written:  # the driver writes a shard once, whatever Ray hands back
                            written.add(shard.index)
                            yield shard, rows
                no_room_since = self._check_room(no_room_since, len(written), len(shards))
        finally:
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
        if self.given_up:
            raise RayWorkersLost(
                "; ".join(self.given_up[i] for i in sorted(self.given_up))
                + f". The other shards are written. {_RESUME}"
            )

    def _check_room(self, since: float | None, written: int, total: int) -> float | None:
        """Stop when every actor is lost and no node has had room for one for ``NODE_WAIT_S``."""
        import ray

        if self.ready or self.lost == 0:
            return None  # working, or still starting (an autoscaler may be adding the first nodes)
        resources = ray.cluster_resources()  # of the live nodes
        if all(resources.get(name, 0) >= amount for name, amount in self.need.items()):
            return None  # a node has room: a replacement actor is starting there
        now = time.monotonic()
        if since is None:
            return now
        if now - since >= NODE_WAIT_S:
            need = " and ".join(f"{amount:g} {name}" for name, amount in self.need.items())
            raise RayWorkersLost(
                f"the Ray cluster has no node left that can run a worker (needs {need}; waited "
                f"{NODE_WAIT_S:g} s); {written} of the {total} shards to do are written. {_RESUME}"
            )
        return since


_RESUME = (
    "Finished shards are kept: run the same command again with --resume (the default) when the cluster has "
    "workers, or with the local engine, to finish the rest"
)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _lost_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors for a worker, actor, node or result that is gone (not an error of our code)."""
    from ray import exceptions

    names = (
        "RayActorError",
        "ObjectLostError",
        "WorkerCrashedError",
        "NodeDiedError",
        "ActorUnschedulableError",
        "OutOfMemoryError",
        "LocalRayletDiedError",
    )
    return tuple(getattr(exceptions, name) for name in names if hasattr(exceptions, name))


def _raise_cause(error: BaseException) -> None:
    """Raise a worker's own exception: bad input as the local engine's one-line error, else Ray's."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, ValueError):
        raise InputError(str(cause)) from error  # the worker's message, not Ray's wrapping
    raise error
