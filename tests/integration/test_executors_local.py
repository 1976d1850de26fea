"""The local executor's start (issue 21, its speed-up): the workers start before a
``Deferred`` shared value is computed, which happens once, in this process; every worker reads
it once from a private file that is gone when the run ends, however it ends."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from pathlib import Path

import pytest

from atb_strategies.executors import Deferred, TaskFailure, run_tasks


def scaled(shared: dict, task: int) -> tuple[int, int, int]:
    """The parent's pid as ``shared`` carries it, ``task`` scaled by it, and this pid."""
    return shared["pid"], shared["factor"] * task, os.getpid()


def fails_on_two(shared: dict, task: int) -> int:
    if task == 2:
        raise ValueError("two")
    return task


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch) -> Path:
    """Where the executor's private files go during the test."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _children() -> set:
    return set(multiprocessing.active_children())


def _ended(before: set) -> bool:
    """Whether the processes started since ``before`` exit on their own. Waits for each one's
    exit; the timeout only guards against a hang (on a busy machine a worker still importing
    when the pool is shut down took more than 10 s to finish and exit)."""
    for child in _children() - before:
        child.join(timeout=300)
    return _children() <= before


def test_deferred_shared_is_made_once_here_after_the_workers_started(temp_dir) -> None:
    made: list[int] = []
    before = _children()

    def make() -> dict:
        made.append(len(_children() - before))  # the workers were spawned already
        return {"pid": os.getpid(), "factor": 3}

    results = dict(
        run_tasks(scaled, [1, 2, 3, 4], shared=Deferred(make), executor="local", workers=2)
    )
    assert made == [2]  # once, with both workers already started
    assert {i: r[1] for i, r in results.items()} == {0: 3, 1: 6, 2: 9, 3: 12}
    assert {r[0] for r in results.values()} == {os.getpid()}  # computed in this process
    assert os.getpid() not in {r[2] for r in results.values()}  # the tasks ran in workers
    assert list(temp_dir.iterdir()) == []  # the shared file is removed
    assert _ended(before)  # not waited for after the last result, the workers still exit


def test_deferred_shared_is_made_once_on_the_serial_executor_too() -> None:
    made: list[int] = []

    def make() -> dict:
        made.append(1)
        return {"pid": os.getpid(), "factor": 2}

    results = dict(run_tasks(scaled, [5, 6], shared=Deferred(make), executor="serial"))
    assert made == [1] and [results[i][1] for i in range(2)] == [10, 12]


def test_a_plain_shared_and_a_failing_task_on_the_pool(temp_dir) -> None:
    results = dict(run_tasks(fails_on_two, [1, 2, 3], shared={"x": 1}, workers=2))
    assert results[0] == 1 and results[2] == 3
    assert results[1] == TaskFailure("ValueError: two")
    assert list(temp_dir.iterdir()) == []


def test_stopping_early_ends_the_workers_and_removes_the_shared_file(temp_dir) -> None:
    before = _children()
    shared = Deferred(lambda: {"pid": os.getpid(), "factor": 1})
    outcomes = run_tasks(scaled, list(range(6)), shared=shared, executor="local", workers=2)
    first = next(outcomes)
    assert first[1][1] == first[0]
    outcomes.close()  # the caller stops iterating
    assert list(temp_dir.iterdir()) == []
    assert _ended(before)


def test_a_deferred_that_raises_stops_the_started_workers(temp_dir) -> None:
    before = _children()

    def make() -> dict:
        raise KeyError("no predictions")

    with pytest.raises(KeyError, match="no predictions"):
        list(run_tasks(scaled, [1, 2], shared=Deferred(make), executor="local", workers=2))
    assert _ended(before)
    assert list(temp_dir.iterdir()) == []


def test_a_sweep_worker_imports_no_exchange_client() -> None:
    """A worker imports the sweep's task module at start; ccxt (about 0.6 s of a 1.8 s import)
    is not part of it: a cell never talks to an exchange."""
    import subprocess
    import sys

    code = (
        "import sys, atb_strategies.sweep.predictions, atb_strategies.sweep.cells; "
        "print(sorted(m for m in ('ccxt', 'atb_strategies.sweep.predictions') if m in "
        "sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["['atb_strategies.sweep.predictions']"]
