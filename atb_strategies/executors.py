"""Run independent tasks serially, on every local core, or on a Ray cluster, with one API.

``run_tasks(fn, tasks, executor=...)`` calls ``fn(shared, task)`` for every task and yields
``(index, result or TaskFailure)`` as tasks finish (not in order), so callers can write each
result atomically as it arrives and show progress. ``shared`` is handed to every task once per
worker, not once per task: locally it is pickled to each worker process when the pool starts;
on Ray it is ``ray.put`` into the object store once and every task gets the reference.

* ``"serial"``: in this process, in order (debugging, and the reference results).
* ``"local"``: a process pool of ``workers`` processes (default: every core), started with
  ``spawn`` (safe with the threads ONNX Runtime and backtrader start); each worker limits
  numeric libraries to one thread, so N workers use N cores. The workers start first and
  import ``fn``'s module while this process prepares ``shared`` (a ``Deferred`` is computed
  only then: a sweep's predictions overlap the workers' start-up); ``shared`` is pickled once
  into a private temporary file and unpickled once per worker, at its first task. Workers
  ignore Ctrl-C: this process stops the pool (and its workers) when it is interrupted or the
  caller stops iterating; once every result is in, they exit on their own. A worker that
  dies (killed, out of memory) breaks the pool; the tasks it took down run once more in a new
  pool, then are reported as failures, as on Ray.
* ``"ray"``: Ray tasks (``pip install atb-strategies[distributed]``). ``ray_address=None``
  starts a new local Ray with ``workers`` CPUs (never joining a cluster that happens to run
  on this machine) and stops it afterwards; ``"auto"`` joins the cluster ``ray start`` made on
  this machine; ``"ray://host:10001"`` a remote one (Ray Client). A task whose worker dies is
  retried once by Ray (``max_retries=1``), then reported as a failure. Nodes share nothing
  with this process but Ray's object store: ``fn``, ``shared`` and the tasks travel as data,
  and callers hand in data, not paths. The JSON of ``ATB_RAY_RUNTIME_ENV`` (e.g.
  ``{"py_modules": ["/path/to/atb_strategies"]}``), when set, is the job's Ray runtime
  environment, for nodes without atb-strategies installed. Every task first compares the
  atb-strategies and onnxruntime versions of its node with this process's
  (``node_versions``): a node with others is refused with one ``ConfigurationError`` naming
  both. The bytes shipped (``shared`` once, the tasks, the results) are logged and kept in
  ``last_transfer``.

A task that raises does not stop the others: it yields ``TaskFailure`` with the error's type
and message, one line.

``spawn`` starts each worker by re-importing the parent's main script. A script that calls
``run_tasks`` (or ``run_sweep``) at import time, outside ``if __name__ == "__main__":``, would
start the work again in every worker, which cannot start processes there. Such a worker ends at
once and silently (``leave_if_bootstrapping``, exit status ``UNGUARDED_MAIN_EXIT``) and the
parent raises one ``ConfigurationError`` naming the guard, instead of worker tracebacks and
failed tasks.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import importlib
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atb_strategies.exceptions import ConfigurationError

log = logging.getLogger(__name__)

EXECUTORS = ("serial", "local", "ray")
#: JSON of the Ray runtime environment of a run (``ray.init(runtime_env=...)``).
RUNTIME_ENV_VAR = "ATB_RAY_RUNTIME_ENV"
#: Bytes shipped by the last Ray run: ``shared`` (once), ``tasks``, ``results`` (pickled) and
#: the number of ``tasks``.
last_transfer: dict[str, int] = {}
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ATB_ONNX_THREADS")


@dataclass(frozen=True)
class Deferred:
    """A ``shared`` value that ``run_tasks`` computes by calling ``make()`` in this process
    when it needs it: on the local executor after the workers have started (they import
    ``fn``'s module meanwhile), elsewhere at once. ``make`` runs once per ``run_tasks``."""

    make: Callable[[], Any]


def _resolve(shared: Any) -> Any:
    return shared.make() if isinstance(shared, Deferred) else shared


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


#: Exit status of a worker that found itself re-importing an unguarded main script.
UNGUARDED_MAIN_EXIT = 87


def in_spawn_bootstrap() -> bool:
    """True in a ``spawn`` worker while it re-imports the parent's main script (the state in
    which ``multiprocessing`` refuses to start processes)."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def leave_if_bootstrapping(executor: str) -> None:
    """End this process at once, silently, if it is a ``spawn`` worker re-importing a main
    script that starts ``executor="local"`` work at import time (no ``__main__`` guard); the
    parent sees ``UNGUARDED_MAIN_EXIT`` and raises the error (see the module doc). Elsewhere
    it does nothing."""
    if executor == "local" and in_spawn_bootstrap():
        raise SystemExit(UNGUARDED_MAIN_EXIT)


def _unguarded_call_line() -> int | None:
    """The line of the main script's top-level statement that led here, when that statement
    runs unconditionally at import (no ``if`` around it, so a worker's re-import runs it too);
    None otherwise, or when there is no main script file to re-import (REPL, notebook)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    frame = sys._getframe(1)
    while frame is not None and not (
        frame.f_globals is getattr(main, "__dict__", None) and frame.f_code.co_name == "<module>"
    ):
        frame = frame.f_back
    if (
        frame is None
        or not path
        or os.path.abspath(frame.f_code.co_filename) != os.path.abspath(path)
    ):
        return None  # no script file, or code that is not the script's own (a notebook cell)
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    line = frame.f_lineno
    for node in tree.body:
        end = getattr(node, "end_lineno", None) or node.lineno
        if node.lineno <= line <= end:
            plain = isinstance(node, ast.Expr | ast.Assign | ast.AnnAssign | ast.AugAssign)
            return line if plain else None
    return None


def check_main_guard() -> None:
    """Refuse to start a ``spawn`` pool from a statement of the main script that runs
    unconditionally at import: every worker would run it again (see the module doc). Calls
    inside ``if __name__ == "__main__":`` (or any other block) pass; a guard that is missing
    in some other way is still caught when the workers start.

    Raises
    ------
    ConfigurationError
        Naming the script, its line and the ``if __name__ == "__main__":`` guard.
    """
    line = _unguarded_call_line()
    if line is not None:
        raise _unguarded_main_error(line)


def _unguarded_main_error(line: int | None = None) -> ConfigurationError:
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None) or "the main script"
    where = f"{script}, line {line}" if line is not None else script
    return ConfigurationError(
        "executor='local' cannot start its worker processes: each re-imports the main "
        f"script ({where}; multiprocessing 'spawn'), which would start the work again at "
        'import. Put that call under if __name__ == "__main__": in the script, or pass '
        "executor='serial'."
    )


def _unguarded_main(processes: Iterable[Any]) -> bool:
    """Whether a worker of a broken pool ended with ``UNGUARDED_MAIN_EXIT``."""
    for process in processes:
        process.join(timeout=5)  # a broken pool terminates the other workers
        if process.exitcode == UNGUARDED_MAIN_EXIT:
            return True
    return False


_worker_shared: Any = None
_worker_shared_from: str | None = None


def _init_worker(modules: tuple[str, ...]) -> None:
    """Start a worker: one thread per numeric library, Ctrl-C left to the parent, and the
    task function's module imported now, while the parent still prepares ``shared``."""
    for name in _THREAD_VARS:
        os.environ.setdefault(name, "1")
    # The variables only reach a BLAS loaded after this point; a main script that imports numpy
    # at the top has loaded it already (spawn re-imports it first), and N workers x N BLAS
    # threads on small matrices ran 10x slower on a busy 2-core machine. threadpoolctl limits
    # the libraries already loaded too.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # imported again by the first task, which then reports the error
            log.debug("worker could not import %s ahead of its tasks", module, exc_info=True)


def _call_in_worker(fn: Callable[[Any, Any], Any], task: Any, shared_file: str) -> Any:
    global _worker_shared, _worker_shared_from
    try:
        if _worker_shared_from != shared_file:  # this worker's first task: read shared once
            with open(shared_file, "rb") as f:
                _worker_shared = pickle.load(f)
            _worker_shared_from = shared_file
        return fn(_worker_shared, task)
    except Exception as e:
        return TaskFailure.of(e)


def _serial(fn: Callable, shared: Any, tasks: list) -> Iterator[tuple[int, Any]]:
    shared = _resolve(shared)
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


def _start_workers(pool: cf.ProcessPoolExecutor, count: int) -> None:
    """Spawn the pool's ``count`` workers now (a pool spawns one per task submitted while
    none is idle): ``count`` empty tasks, whose results nobody waits for."""
    for _ in range(count):
        pool.submit(int)


def _handout(order: Callable[[Any], Sequence[int]] | None, shared: Any, count: int) -> list[int]:
    """The task indices in the order ``order`` gives for ``shared`` (as given without one).

    Raises
    ------
    ValueError
        When ``order`` does not give every index exactly once.
    """
    if order is None:
        return list(range(count))
    given = [int(i) for i in order(shared)]
    if sorted(given) != list(range(count)):
        raise ValueError(f"order must give each of the {count} task indices once, got {given}")
    return given


def _local(
    fn: Callable,
    shared: Any,
    tasks: list,
    workers: int,
    order: Callable[[Any], Sequence[int]] | None = None,
) -> Iterator[tuple[int, Any]]:
    context = multiprocessing.get_context("spawn")
    folder = Path(tempfile.mkdtemp(prefix="atb-shared-"))
    shared_file = str(folder / "shared.pickle")
    module = getattr(fn, "__module__", None)
    modules = (module,) if module else ()
    todo = list(range(len(tasks)))
    try:
        for attempt in range(2):  # a second pool for the tasks a dying worker took down
            lost: list[int] = []
            pool = cf.ProcessPoolExecutor(
                max_workers=min(workers, len(todo)),
                mp_context=context,
                initializer=_init_worker,
                initargs=(modules,),
            )
            try:
                if attempt == 0:
                    _start_workers(pool, min(workers, len(todo)))
                    value = _resolve(shared)  # while the workers start
                    with open(shared_file, "wb") as f:
                        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
                    todo = _handout(order, value, len(tasks))
                    del value
            except BaseException:
                _stop(pool)
                raise
            yield from _run_pool(pool, fn, tasks, todo, shared_file, attempt, lost)
            if not lost:
                return
            again = set(lost)
            todo = [i for i in todo if i in again]  # in the order they were handed out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_pool(
    pool: cf.ProcessPoolExecutor,
    fn: Callable,
    tasks: list,
    todo: list[int],
    shared_file: str,
    attempt: int,
    lost: list[int],
) -> Iterator[tuple[int, Any]]:
    """Run ``todo`` on ``pool`` and yield their outcomes; the tasks a dying worker took down
    go to ``lost`` on the first attempt, and are reported as failures on the second."""
    done = False
    processes: dict[int, Any] = {}  # every worker started, kept to read exit statuses
    try:
        futures: dict[cf.Future, int] = {}
        unsent: list[int] = []  # refused because a worker had already died
        for i in todo:
            try:
                futures[pool.submit(_call_in_worker, fn, tasks[i], shared_file)] = i
            except BrokenProcessPool:
                unsent.append(i)
            processes.update(getattr(pool, "_processes", None) or {})
        if unsent and _unguarded_main(processes.values()):
            raise _unguarded_main_error()
        for i in unsent:
            if attempt == 0:
                lost.append(i)
            else:
                yield i, TaskFailure("BrokenProcessPool: a worker process died")
        for future in cf.as_completed(futures):
            i = futures[future]
            try:
                outcome = future.result()
            except BrokenProcessPool as e:
                if _unguarded_main(processes.values()):
                    raise _unguarded_main_error() from None
                if attempt == 0:
                    lost.append(i)
                    continue
                outcome = TaskFailure.of(e)
            except Exception as e:  # e.g. a result that cannot be unpickled
                outcome = TaskFailure.of(e)
            yield i, outcome
        done = True
    finally:
        if done:  # every result is in: the workers exit on their own (about 1 s of teardown)
            pool.shutdown(wait=False)
        else:
            _stop(pool)


@dataclass(frozen=True)
class NodeRefused(TaskFailure):
    """A task refused to run because its node's versions differ from the driver's."""


def node_versions() -> dict[str, str]:
    """The atb-strategies and onnxruntime versions of this process."""
    import onnxruntime

    package = sys.modules[__package__ or "atb_strategies"]
    return {
        "atb-strategies": str(getattr(package, "__version__", "unknown")),
        "onnxruntime": str(onnxruntime.__version__),
    }


def _shown(versions: dict[str, str]) -> str:
    return " and ".join(f"{name} {versions.get(name)}" for name in sorted(versions))


def check_node_versions(expected: dict[str, str]) -> None:
    """Refuse to run on a node whose versions differ from the driver's (``expected``).

    Raises
    ------
    ConfigurationError
        One line naming the node's versions and the driver's.
    """
    here = node_versions()
    if here != expected:
        raise ConfigurationError(
            f"Ray node {socket.gethostname()} runs {_shown(here)} but the driver runs "
            f"{_shown(expected)}; install the same versions on every node, or ship the "
            f"package with a Ray runtime environment ({RUNTIME_ENV_VAR}, see the README "
            "section 'Running on a cluster')."
        )


def _ray_task(fn: Callable, shared: Any, task: Any, expected: dict[str, str]) -> Any:
    for name in _THREAD_VARS:
        os.environ.setdefault(name, "1")
    try:
        check_node_versions(expected)
    except ConfigurationError as e:
        return NodeRefused(str(e))
    try:
        return fn(shared, task)
    except Exception as e:
        return TaskFailure.of(e)


def _runtime_env() -> dict[str, Any] | None:
    text = os.environ.get(RUNTIME_ENV_VAR)
    if not text:
        return None
    try:
        env = json.loads(text)
    except ValueError as e:
        raise ConfigurationError(
            f"{RUNTIME_ENV_VAR} must hold a JSON object (a Ray runtime environment): {e}."
        ) from None
    if not isinstance(env, dict):
        raise ConfigurationError(
            f"{RUNTIME_ENV_VAR} must hold a JSON object (a Ray runtime environment), "
            f"not {type(env).__name__}."
        )
    return env


def _size(value: Any) -> int:
    try:
        return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # measured only; Ray pickles with cloudpickle
        return 0


def _ray(
    fn: Callable,
    shared: Any,
    tasks: list,
    workers: int,
    address: str | None,
    order: Callable[[Any], Sequence[int]] | None = None,
) -> Iterator[tuple[int, Any]]:
    try:
        import ray
    except ImportError as e:
        raise ConfigurationError(
            "executor='ray' needs Ray: pip install 'atb-strategies[distributed]'."
        ) from e
    shared = _resolve(shared)
    started = False
    if not ray.is_initialized():
        env = _runtime_env()
        if address is None:  # "local": a new instance, never a cluster found on this machine
            ray.init(
                address="local",
                num_cpus=workers,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env=env,
            )
        else:
            ray.init(address=address, log_to_driver=False, runtime_env=env)
        started = True
    pending: dict[Any, int] = {}
    expected = node_versions()
    stats = {"shared": _size(shared), "tasks": 0, "results": 0, "count": len(tasks)}
    last_transfer.clear()
    last_transfer.update(stats)
    try:
        remote = ray.remote(max_retries=1, num_cpus=1)(_ray_task)
        shared_ref = ray.put(shared)
        for i in _handout(order, shared, len(tasks)):
            pending[remote.remote(fn, shared_ref, tasks[i], expected)] = i
            last_transfer["tasks"] += _size(tasks[i])
        while pending:
            refs = list(pending)
            done, rest = ray.wait(refs, num_returns=1)
            if rest:  # every other task already finished too, without waiting
                done += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in done:
                i = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as e:  # worker lost after its retry, or a Ray error
                    outcome = TaskFailure.of(e)
                if isinstance(outcome, NodeRefused):
                    raise ConfigurationError(outcome.error)
                last_transfer["results"] += _size(outcome)
                yield i, outcome
        log.info(
            "ray: shipped %d bytes once (shared), %d bytes of %d task(s), got %d bytes back",
            last_transfer["shared"],
            last_transfer["tasks"],
            last_transfer["count"],
            last_transfer["results"],
        )
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
    order: Callable[[Any], Sequence[int]] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, fn(shared, task))`` for every task as it finishes (see the module doc).

    ``fn`` must be a module-level function (it is pickled to the workers). ``shared`` may be a
    ``Deferred``: its value is computed here once the local workers are starting. ``order``
    (local and Ray) maps the value of ``shared`` to the indices of ``tasks`` in the order to
    hand them out, every index once: the longest first, so that no worker is left alone with a
    long task at the end (``serial`` runs them as given).

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
    leave_if_bootstrapping(executor)
    n = default_workers() if workers is None else workers
    if n < 1:
        raise ConfigurationError(f"The 'workers' parameter must be >= 1. Got {n!r} instead.")
    items = list(tasks)
    if not items:
        return iter(())
    if executor == "serial" or (executor == "local" and (n == 1 or len(items) == 1)):
        return _serial(fn, shared, items)
    if executor == "local":
        check_main_guard()
        return _local(fn, shared, items, n, order)
    return _ray(fn, shared, items, n, ray_address, order)
