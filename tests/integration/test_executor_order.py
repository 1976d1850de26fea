"""The order the local executor hands tasks out in (issue 21, its speed-up on unequal cells).

``run_tasks(order=...)`` hands the tasks out in the order computed from the value of ``shared``
(a ``Deferred`` is made first); ``sweep.runner.longest_first`` puts the cells expected to
trade most first, from how many bars' predicted return pass their entry thresholds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atb_strategies.executors import Deferred, _handout, _local, run_tasks
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.sweep.cells import Cell
from atb_strategies.sweep.runner import _group, longest_first

SETTINGS = {"timeframe": "1h", "cash": 1e4, "commission": 0.0, "slippage_bps": 0.0}


def logged(shared: dict, task: int) -> int:
    """Append ``task`` to the log file as it starts."""
    with open(shared["log"], "a") as f:
        f.write(f"{task}\n")
    return task * 10


def test_one_worker_runs_the_tasks_in_the_order_given_for_the_made_shared(tmp_path) -> None:
    log = tmp_path / "started.txt"
    made: list[dict] = []

    def make() -> dict:
        made.append({"log": str(log), "first": 3})
        return made[-1]

    def order(shared: dict) -> list[int]:
        assert shared is made[0]  # the value of the Deferred, made once
        return [shared["first"], 0, 4, 1, 2]

    out = dict(_local(logged, Deferred(make), list(range(5)), 1, order))
    assert out == {i: i * 10 for i in range(5)}
    assert log.read_text().split() == ["3", "0", "4", "1", "2"]


def test_two_workers_with_an_order_run_every_task_once(tmp_path) -> None:
    log = tmp_path / "started.txt"
    out = list(
        run_tasks(
            logged,
            range(6),
            shared={"log": str(log)},
            executor="local",
            workers=2,
            order=lambda shared: [5, 4, 3, 2, 1, 0],
        )
    )
    assert sorted(out) == [(i, i * 10) for i in range(6)]
    assert sorted(map(int, log.read_text().split())) == list(range(6))


@pytest.mark.parametrize("bad", [[0, 1], [0, 1, 1], [0, 1, 5]])
def test_an_order_that_misses_or_repeats_a_task_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="each of the 3 task indices once"):
        _handout(lambda shared: bad, None, 3)
    assert _handout(None, None, 3) == [0, 1, 2]


def _cell(**params) -> Cell:
    return Cell("ml_basic", "BTCUSDT", "v1", {"registry": "models", **params}, SETTINGS)


def test_longest_first_orders_cells_by_bars_past_their_entry_thresholds() -> None:
    returns = np.array([-0.004, -0.002, 0.0005, 0.0015, 0.0025, 0.0035, np.nan])
    cells = [
        _cell(long_threshold=0.003),  # 1 bar past
        _cell(long_threshold=0.001),  # 3 bars
        _cell(long_threshold=0.003, allow_shorts=True, short_threshold=0.001),  # 1 + 2
        _cell(long_threshold=0.0),  # 4 bars
        _cell(long_threshold=0.001, stop_loss=0.05),  # 3 bars, after its twin
        _cell(long_threshold=0.002, model_type="other"),  # no estimate: first
    ]
    estimates = {_group(MlBasic, c): returns for c in cells[:5]}
    assert longest_first(cells, estimates)(None) == [5, 3, 1, 2, 4, 0]
    assert longest_first(cells, {})(None) == list(range(6))  # nothing known: as given


def test_sweep_hands_out_the_cells_longest_first(monkeypatch, tmp_path) -> None:
    """``run_sweep`` passes ``longest_first`` of its cells and their predicted returns."""
    import atb_strategies.sweep.runner as runner

    seen: list = []
    real = runner.run_tasks

    def spy(fn, tasks, **kwargs):
        order = kwargs["order"]
        outcomes = list(real(fn, tasks, **{**kwargs, "executor": "serial"}))
        seen.append(order(None))
        return iter(outcomes)

    monkeypatch.setattr(runner, "run_tasks", spy)
    from tests.conftest import synthetic_candles

    registry = Path(__file__).resolve().parents[2] / "models"
    frame = synthetic_candles(600, seed=3)
    grid = {"long_threshold": [0.004, 0.0, 0.002]}
    results = runner.run_sweep(
        "ml_basic", frame, grid, params={"registry": str(registry)}, executor="serial"
    )
    assert results["error"].isna().all()
    assert seen and seen[0][0] == 1  # the lowest threshold trades most: handed out first
    assert sorted(seen[0]) == [0, 1, 2]


def test_entry_signals_counts_both_sides_ignores_nan_and_non_numbers() -> None:
    from atb_strategies.sweep.thresholds import entry_signals

    returns = np.array([-0.004, -0.002, 0.0005, 0.0015, 0.0025, np.nan])
    assert entry_signals(returns, MlBasic, {"long_threshold": 0.001}) == 2
    both = {"long_threshold": 0.001, "short_threshold": 0.003, "allow_shorts": True}
    assert entry_signals(returns, MlBasic, both) == 3
    assert entry_signals(returns, MlBasic, {}) == 1  # the strategy's default 0.002
    assert entry_signals(returns, MlBasic, {"long_threshold": "high"}) == 0
