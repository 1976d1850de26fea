"""Winsorised targets (``training.targets``) and the MLP's use of them and of its L2 choice."""

from __future__ import annotations

import numpy as np
import pytest

from atb_strategies.training.mlp import ALPHAS, MlpFamily
from atb_strategies.training.targets import clip_bounds, winsorise


def test_winsorise_clips_to_the_robust_band_and_counts():
    y = np.concatenate([np.linspace(-1, 1, 1001), [50.0, -80.0]])
    out = winsorise(y, 3.0)
    lo, hi = clip_bounds(y, 3.0)
    assert out.bounds == (lo, hi) and out.clipped == 2
    assert out.y.min() == lo and out.y.max() == hi
    assert np.array_equal(out.y[:1001], y[:1001])  # the body is untouched
    assert out.lineage(3.0) == {"robust_sd": 3.0, "bounds": [lo, hi], "clipped": 2}


def test_winsorise_applies_given_bounds_and_leaves_alone_without_k():
    train = winsorise(np.array([0.0, 1.0, 2.0, 3.0, 100.0]), 3.0)
    val = winsorise(np.array([-50.0, 1.0, 50.0]), 3.0, train.bounds)
    assert val.bounds == train.bounds and val.clipped == 2
    raw = winsorise(np.array([0.0, 1e9]), None)
    assert raw.bounds is None and raw.clipped == 0 and raw.y[1] == 1e9
    assert raw.lineage(None) is None
    constant = winsorise(np.full(10, 0.5), 3.0)  # MAD 0: an infinite band
    assert constant.clipped == 0 and np.all(constant.y == 0.5)


def test_mlp_fits_winsorised_targets_and_records_its_l2_choice():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 4, 2)).astype(np.float32)
    y = 0.01 * X[:, -1, 0] + 0.001 * rng.standard_normal(600)
    y[::50] = 5.0  # 12 wild bars the squared loss would chase
    family = MlpFamily()
    fitted = family.fit(X[:400], y[:400], X[400:], y[400:], seed=0, epochs=3)
    record = family.selection(fitted)
    assert record["alpha"] in ALPHAS
    assert set(record["validation_loss"]) == {f"{a:g}" for a in ALPHAS}
    assert record["validation_loss"][f"{record['alpha']:g}"] == min(
        record["validation_loss"].values()
    )
    assert 8 <= record["target_clip"]["clipped"] <= 10  # the 8 wild train bars (and a tail bar)
    # the target scaling is the clipped targets': the wild bars do not shift the mean
    assert fitted.y_mean == pytest.approx(winsorise(y[:400], 3.0).y.mean())
    unclipped = MlpFamily(target_clip=None, alphas=(1e-3,))
    raw = unclipped.fit(X[:400], y[:400], X[400:], y[400:], seed=0, epochs=3)
    assert unclipped.selection(raw)["target_clip"] is None
    assert raw.y_mean == pytest.approx(y[:400].mean())
