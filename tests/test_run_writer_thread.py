"""The local engine writes each shard on one writer thread while it explains the next
(:func:`lrp_domains.run.dataset.explain_local`): shards are written in order, the two overlap, and
a failure stops the run only once the shard being written is written."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest

from lrp_domains.files.formats import Shard
from lrp_domains.run.dataset import explain_local

WAIT = 10.0  # seconds a test waits for the other thread before calling the overlap missing


class Reader:
    path = Path("in.fa")

    def read(self, shard: Shard):
        ids = [f"r{i}" for i in range(shard.start, shard.stop)]
        return ids, ids


class Explainer:
    """Rows of ids; records the shards it starts; fails on ``fail_on``."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.started: list[int] = []
        self.fail_on = fail_on
        self.second_started = threading.Event()

    def explain_rows(self, ids, items, first_row=0):
        index = first_row // 2
        self.started.append(index)
        if index == 1:
            self.second_started.set()
        if index == self.fail_on:
            raise ValueError(f"bad record in shard {index}")
        return pd.DataFrame({"row": range(first_row, first_row + len(ids)), "id": ids})


class Writer:
    """Records what it wrote, and on which thread; shard 0 waits for the second shard's explanation
    to start (so the test fails, after WAIT, when they do not overlap); fails on ``fail_on``."""

    def __init__(self, explainer: Explainer, fail_on: int | None = None, wait: bool = True) -> None:
        self.explainer, self.fail_on, self.wait = explainer, fail_on, wait
        self.written: list[int] = []
        self.threads: set[str] = set()
        self.overlapped = False

    def write(self, shard: Shard, rows: pd.DataFrame) -> None:
        self.threads.add(threading.current_thread().name)
        if shard.index == 0 and self.wait:
            self.overlapped = self.explainer.second_started.wait(WAIT)
        if shard.index == self.fail_on:
            raise OSError(28, "No space left on device")
        assert rows["id"].tolist() == [f"r{i}" for i in range(shard.start, shard.stop)]
        self.written.append(shard.index)


def shards(n: int) -> list[Shard]:
    return [Shard(i, 2 * i, 2 * i + 2) for i in range(n)]


def test_shards_are_written_in_order_on_one_thread_while_the_next_is_explained():
    explainer = Explainer()
    writer = Writer(explainer)
    counted: list[int] = []
    explain_local(explainer, Reader(), shards(4), {}, writer, counted.append)
    assert writer.overlapped  # shard 1 was being explained while shard 0 was written
    assert writer.written == [0, 1, 2, 3] and counted == [2, 2, 2, 2]
    assert len(writer.threads) == 1 and threading.current_thread().name not in writer.threads


def test_an_explanation_error_waits_for_the_shard_being_written():
    explainer = Explainer(fail_on=2)
    writer = Writer(explainer)
    with pytest.raises(ValueError, match="bad record in shard 2"):
        explain_local(explainer, Reader(), shards(4), {}, writer)
    assert writer.written == [0, 1]  # shard 1, in flight when shard 2 failed, is written
    assert 3 not in explainer.started


def test_a_storage_failure_stops_the_run_before_the_next_shard_is_written():
    explainer = Explainer()
    writer = Writer(explainer, fail_on=1, wait=False)
    with pytest.raises(OSError, match="No space left"):
        explain_local(explainer, Reader(), shards(4), {}, writer)
    assert writer.written == [0]
    assert max(explainer.started) <= 2  # at most the shard after the failed one was explained


def test_a_storage_failure_of_an_earlier_shard_is_said_before_a_later_bad_record():
    explainer = Explainer(fail_on=2)
    writer = Writer(explainer, fail_on=1, wait=False)
    with pytest.raises(OSError, match="No space left"):
        explain_local(explainer, Reader(), shards(4), {}, writer)
    assert writer.written == [0]
