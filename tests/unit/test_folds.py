"""Walk-forward folds: boundaries, purge room, embargo, expanding windows, refusals."""

from __future__ import annotations

import pytest

from atb_strategies.evaluation.folds import Fold, check_fold, make_folds
from atb_strategies.exceptions import ConfigurationError


def test_make_folds_with_rolling_window_steps_by_test_bars_and_keeps_the_embargo():
    folds = make_folds(1000, train_bars=400, test_bars=100, embargo=20, horizon=1)
    assert [f.test_start for f in folds] == [420, 520, 620, 720, 820, 920]
    for f in folds:
        assert f.train_end - f.train_start == 400
        assert f.test_start - f.train_end == 20
        assert f.train_start < f.val_start < f.train_end
        assert f.test_end <= 1000 - 1  # the last target lies inside the candles
    assert folds[-1].test_end == 999


def test_make_folds_with_expanding_window_starts_every_fold_at_bar_zero():
    folds = make_folds(1000, train_bars=400, test_bars=200, embargo=10, expanding=True)
    assert {f.train_start for f in folds} == {0}
    assert [f.train_end for f in folds] == [400, 600, 800]


def test_make_folds_with_step_and_max_folds_keeps_the_last_ones_renumbered():
    folds = make_folds(1000, train_bars=300, test_bars=100, step=50, embargo=0, max_folds=3)
    assert [f.number for f in folds] == [0, 1, 2]
    assert folds[-1].test_end == 999
    assert [f.test_start for f in folds] == [850, 900, 950]


def test_check_fold_with_train_window_touching_test_period_by_one_bar_is_refused():
    touching = Fold(0, 0, 80, 101, 100, 200)  # the training window's last bar is test bar 100
    with pytest.raises(ConfigurationError, match="at least the embargo"):
        check_fold(touching, embargo=0)
    adjacent = Fold(0, 0, 80, 100, 100, 200)
    assert check_fold(adjacent, embargo=0) is adjacent
    with pytest.raises(ConfigurationError, match=r"embargo \(5 bars\)"):
        check_fold(adjacent, embargo=5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_bars": 1}, "'train_bars'"),
        ({"test_bars": 0}, "'test_bars'"),
        ({"embargo": -1}, "'embargo'"),
        ({"val_fraction": 1.0}, "'val_fraction'"),
        ({"train_bars": 990}, "No fold fits"),
    ],
)
def test_make_folds_with_bad_parameters_raises_naming_them(kwargs, match):
    settings = {"train_bars": 400, "test_bars": 100, "embargo": 10, **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        make_folds(1000, **settings)
