"""The Ray Data engine: the same shards, read and explained by an actor pool.

Each actor builds the explainer once (from a picklable factory), reads its shards from the input
file itself (the file must be reachable at the same path on every node: a shared file system)
and returns their rows; the driver writes shards and the manifest exactly as the local engine
does, so the output, resuming and the manifest are the same. Joins ``address`` / ``RAY_ADDRESS``
when given, else starts a local cluster with ``num_workers`` CPUs. Optional dependency:
``pip install "ray[data]"`` (``lrp-domains[distributed]``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd

from lrp_domains.domains import Reader
from lrp_domains.errors import InputError
from lrp_domains.files.formats import Shard


class _ShardExplainer:
    """A Ray actor: loads the explainer once, then explains one shard per call."""

    def __init__(self, factory: Callable[[], Any], path: str, column: str, options: dict) -> None:
        import torch

        torch.set_num_threads(1)  # one actor per core
        self.explainer = factory()
        if torch.cuda.is_available():  # Ray gave this actor a GPU: the explainers follow the model's device
            self.explainer.model.to("cuda")
        self.reader = self.explainer.reader(path, column)
        self.options = options

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from lrp_domains.run.dataset import explain_shard

        frames = []
        for row in batch.itertuples():
            shard = Shard(int(row.shard), int(row.start), int(row.stop), int(row.offset), int(row.line))
            rows = explain_shard(self.explainer, self.reader, shard, self.options)
            rows.insert(0, "shard", shard.index)
            frames.append(rows)
        return pd.concat(frames, ignore_index=True)


def require_ray() -> None:
    """Raise a clear ImportError when Ray Data is not installed."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ImportError('the Ray engine needs Ray Data: pip install "ray[data]" (or lrp-domains[distributed])') \
            from error


def run_on_ray(factory: Callable[[], Any], reader: Reader, column: str, shards: list[Shard], options: dict,
               num_workers: int, address: str | None = None) -> Iterator[tuple[Shard, pd.DataFrame]]:
    """Yield ``(shard, rows)`` in input order, computed on Ray Data."""
    require_ray()
    import ray
    import ray.data
    import torch

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # Ray Data logs every execution at INFO
    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=max(num_workers, 1), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
            started = True
    try:
        if not shards:
            return
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        descriptors = ray.data.from_items(
            [{"shard": s.index, "start": s.start, "stop": s.stop, "offset": s.offset, "line": s.line} for s in shards],
            override_num_blocks=len(shards))
        explained = descriptors.map_batches(
            _ShardExplainer, batch_size=1, batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=num_workers),
            num_gpus=1 if torch.cuda.is_available() else 0,
            fn_constructor_kwargs={"factory": factory, "path": str(reader.path), "column": column, "options": options})
        by_index = {s.index: s for s in shards}
        pending: dict[int, list[pd.DataFrame]] = {}
        try:
            for batch in explained.iter_batches(batch_size=None, batch_format="pandas"):
                for index, rows in batch.groupby("shard", sort=False):
                    pending.setdefault(int(index), []).append(rows.drop(columns="shard"))
                    shard = by_index[int(index)]
                    if sum(len(f) for f in pending[int(index)]) == shard.size:
                        yield shard, pd.concat(pending.pop(int(index)), ignore_index=True)
        except Exception as error:
            bad_input = _bad_input_error(error, reader)
            if bad_input is None:
                raise
            raise InputError(bad_input) from error  # the worker's message, not Ray's wrapping
    finally:
        if started:
            ray.shutdown()


def _bad_input_error(error: BaseException, reader: Reader) -> str | None:
    """A bad-input message a worker raised about the input, or None.

    Ray Data hands back the worker's exception only as formatted text (the InputError object is
    not kept), so the message is found there: ours always start with the input file's name.
    """
    found = re.findall(rf"(?:ValueError|InputError): ({re.escape(reader.path.name)}[,:] .*)", str(error))
    return found[-1] if found else None
