"""A local worker runs its numeric libraries on one thread, even when the main script had
loaded them before the worker's initializer ran (spawn re-imports the main script first)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import numpy  # loaded before the initializer, as a benchmark script's imports do
import pickle
from threadpoolctl import threadpool_info
from atb_strategies.executors import _init_worker

before = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
_init_worker(pickle.dumps(None))
after = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
print(before, after)
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: BLAS runs one thread")
def test_worker_initializer_limits_an_already_loaded_blas_to_one_thread() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True
    )
    before, after = map(int, out.stdout.split())
    assert before > 1  # the test means something: BLAS had several threads
    assert after == 1
