"""A walk-forward and a sweep on a two-node Ray cluster against the local executor.

The cluster is the one of ``tests/integration/test_ray_cluster.py``: a head with 0 CPUs and one
worker node with 2 CPUs in its own mount namespace (an empty tmpfs over the registry, the data,
the outputs and this checkout; the code arrives by ``ATB_RAY_RUNTIME_ENV`` ``py_modules``), so
every task runs where none of the driver's files exist. The local executor gets 2 worker
processes. Sides alternate (local, cluster, local, cluster...) and the ratio is printed; the
bytes shipped per run and per task come from ``executors.last_transfer``. Needs root (unshare).

    PYTHONPATH=$PWD python3 benchmarks/bench_ray_cluster.py --folds 12 --cells 8 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ["RAY_AUTH_MODE"] = "token"  # before Ray is imported: the driver joins a cluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import atb_strategies
from atb_strategies import executors
from atb_strategies.evaluation.walkforward import run_walk_forward
from atb_strategies.sweep import run_sweep
from tests.conftest import synthetic_candles
from tests.integration.test_ray_cluster import V1, V2, Cluster, _bundle, _wf_config
from tests.integration.test_walk_forward import ar_market


def _timed(fn) -> tuple[float, dict[str, int]]:
    executors.last_transfer.clear()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, dict(executors.last_transfer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=12)
    parser.add_argument("--cells", type=int, default=8, choices=(4, 8))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    shipped = {"py_modules": [str(Path(atb_strategies.__file__).parent)]}
    os.environ[executors.RUNTIME_ENV_VAR] = json.dumps(shipped)
    base = Path(tempfile.mkdtemp(prefix="atb-bench-cluster-"))
    cluster = Cluster(base)
    cluster.start()
    try:
        cluster.wait_for_cpus()
        registry = cluster.hidden[0]
        _bundle(registry, V1, seed=0)
        _bundle(registry, V2, seed=1)
        candles = synthetic_candles(3000, seed=3)
        grid = {"long_threshold": [0.0, 0.002], "stop_loss": [0.01, 0.03]}
        versions = [None, V1] if args.cells == 8 else [V1]
        sweep = {"versions": versions, "params": {"registry": str(registry)}}
        market = ar_market(600 + 176 + args.folds * 100 + 1, phi=0.3, seed=4)

        def wf(executor: str, where: Path) -> None:
            config = _wf_config(where, max_folds=args.folds, epochs=args.epochs)
            run = run_walk_forward(
                market, config, executor=executor, workers=2, ray_address=cluster.address
            )
            assert all(r.error is None for r in run.results), [r.error for r in run.results]

        def sw(executor: str) -> None:
            run = run_sweep(
                "ml_basic",
                candles,
                grid,
                executor=executor,
                workers=2,
                ray_address=cluster.address,
                **sweep,
            )
            assert run.attrs["failed"] == 0

        rows = []
        for r in range(args.rounds):
            for name, local, remote in (
                (
                    f"walk-forward {args.folds} folds",
                    lambda r=r: wf("local", base / f"local-{r}"),
                    lambda r=r: wf("ray", registry / f"wf-{r}"),
                ),
                (f"sweep {len(versions) * 4} cells", lambda: sw("local"), lambda: sw("ray")),
            ):
                t_local, _ = _timed(local)
                t_ray, sent = _timed(remote)
                rows.append((name, t_local, t_ray, sent))
                count = max(1, sent.get("count", 1))
                per_task = (sent.get("tasks", 0) + sent.get("results", 0)) // count
                print(
                    f"{name:24s} local {t_local:7.1f} s  cluster {t_ray:7.1f} s  "
                    f"ratio {t_ray / t_local:5.2f}  shipped: shared {sent.get('shared', 0):,} B "
                    f"once, tasks {sent.get('tasks', 0):,} B, results {sent.get('results', 0):,} B "
                    f"for {count} tasks ({per_task:,} B/task there and back)",
                    flush=True,
                )
        print(f"load average at the end: {os.getloadavg()}")
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
