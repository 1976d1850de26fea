"""Run independent tasks serially, on every local core, or on a Ray cluster, with one API.

``run_tasks(fn, tasks, executor=...)`` calls ``fn(shared, task)`` for every task and yields
``(index, result or TaskFailure)`` as tasks finish (not in order), so callers can write each
result atomically as it arrives and show progress. ``shared`` is handed to every task once per
worker, not once per task: locally it is pickled to each worker process when the pool starts;
on Ray it is ``ray.put`` into the object store once and every task gets the reference.

* ``"serial"``: in this process, in order (debugging, and the reference results).
* ``"local"``: a process pool of ``workers`` processes (default: every core), started with
  ``spawn`` (safe with the threads ONNX Runtime and backtrader start); each worker limits
  numeric libraries to one thread, so N workers use N cores. ``shared`` is pickled once in
  this process and unpickled once per worker. Workers ignore Ctrl-C: this process stops the
  pool (and its workers) when it is interrupted or the caller stops iterating. A worker that
  dies (killed, out of memory) breaks the pool; the tasks it took down run once more in a new
  pool, then are reported as failures, as on Ray.
* ``"ray"``: Ray tasks (``pip install atb-strategies[distributed]``). ``ray_address=None``
  starts a local Ray with ``workers`` CPUs and stops it afterwards; ``"auto"`` joins the
  cluster ``ray start`` made on this machine; ``"ray://host:10001"`` a remote one. A task
  whose worker dies is retried once by Ray (``max_retries=1``), then reported as a failure.

A task that raises does not stop the others: it yields ``TaskFailure`` with the error's type
and message, one line.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import pickle
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from atb_strategies.exceptions import ConfigurationError

EXECUTORS = ("serial", "local", "ray")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ATB_ONNX_THREADS")


@dataclass(frozen=True)
class TaskFailure:
    """A task that raised: ``error`` is ``"Type: message"`` on one line."""

    error: str

    @classmethod
    def of(cls, e: BaseException) -> TaskFailure:
        return cls(" ".join(f"{type(e).__name__}: {e}".split()))


def default_workers() -> int:
    """Every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_worker_shared: Any = None


def _init_worker(payload: bytes) -> None:
    global _worker_shared
    for name in _THREAD_VARS:
        os.environ.setdefault(name, "1")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    _worker_shared = pickle.loads(payload)


def _call_in_worker(fn: Callable[[Any, Any], Any], task: Any) -> Any:
    try:
        return fn(_worker_shared, task)
    except Exception as e:
        return TaskFailure.of(e)


def _serial(fn: Callable, shared: Any, tasks: list) -> Iterator[tuple[int, Any]]:
    for i, task in enumerate(tasks):
        try:
            yield i, fn(shared, task)
        except Exception as e:
            yield i, TaskFailure.of(e)


def _stop(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers without waiting for running tasks."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    # before shutdown(), which forgets them; a worker ignores SIGINT but not SIGTERM
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)


def _local(fn: Callable, shared: Any, tasks: list, workers: int) -> Iterator[tuple[int, Any]]:
    context = multiprocessing.get_context("spawn")
    payload = pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)
    todo = list(range(len(tasks)))
    for attempt in range(2):  # a second pool for the tasks a dying worker took down
        lost: list[int] = []
        pool = cf.ProcessPoolExecutor(
            max_workers=min(workers, len(todo)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(payload,),
        )
        done = False
        try:
            futures = {pool.submit(_call_in_worker, fn, tasks[i]): i for i in todo}
            for future in cf.as_completed(futures):
                i = futures[future]
                try:
                    outcome = future.result()
                except BrokenProcessPool as e:
                    if attempt == 0:
                        lost.append(i)
                        continue
                    outcome = TaskFailure.of(e)
                except Exception as e:  # e.g. a result that cannot be unpickled
                    outcome = TaskFailure.of(e)
                yield i, outcome
            done = True
        finally:
            if done:
                pool.shutdown(wait=True)
            else:
                _stop(pool)
        if not lost:
            return
        todo = sorted(lost)


def _ray_task(fn: Callable, shared: Any, task: Any) -> Any:
    for name in _THREAD_VARS:
        os.environ.setdefault(name, "1")
    try:
        return fn(shared, task)
    except Exception as e:
        return TaskFailure.of(e)


def _ray(
    fn: Callable, shared: Any, tasks: list, workers: int, address: str | None
) -> Iterator[tuple[int, Any]]:
    try:
        import ray
    except ImportError as e:
        raise ConfigurationError(
            "executor='ray' needs Ray: pip install 'atb-strategies[distributed]'."
        ) from e
    started = False
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    pending: dict[Any, int] = {}
    try:
        remote = ray.remote(max_retries=1, num_cpus=1)(_ray_task)
        shared_ref = ray.put(shared)
        pending = {remote.remote(fn, shared_ref, task): i for i, task in enumerate(tasks)}
        while pending:
            refs = list(pending)
            done, rest = ray.wait(refs, num_returns=1)
            if rest:  # every other task already finished too, without waiting
                done += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in done:
                i = pending.pop(ref)
                try:
                    yield i, ray.get(ref)
                except Exception as e:  # worker lost after its retry, or a Ray error
                    yield i, TaskFailure.of(e)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def run_tasks(
    fn: Callable[[Any, Any], Any],
    tasks: Iterable[Any],
    *,
    shared: Any = None,
    executor: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, fn(shared, task))`` for every task as it finishes (see the module doc).

    ``fn`` must be a module-level function (it is pickled to the workers).

    Raises
    ------
    ConfigurationError
        Unknown ``executor`` or ``workers`` below 1.
    """
    if executor not in EXECUTORS:
        raise ConfigurationError(
            f"The 'executor' parameter must be one of {', '.join(EXECUTORS)}. "
            f"Got {executor!r} instead."
        )
    n = default_workers() if workers is None else workers
    if n < 1:
        raise ConfigurationError(f"The 'workers' parameter must be >= 1. Got {n!r} instead.")
    items = list(tasks)
    if not items:
        return iter(())
    if executor == "serial" or (executor == "local" and (n == 1 or len(items) == 1)):
        return _serial(fn, shared, items)
    if executor == "local":
        return _local(fn, shared, items, n)
    return _ray(fn, shared, items, n, ray_address)
