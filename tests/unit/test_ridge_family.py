"""The ridge family's lag-decay prior and its cross-validation on the train part."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.linear_model import Ridge

from atb_strategies.training.ridge import (
    TARGET_CLIP,
    FoldMoments,
    RidgeFamily,
    _label,
    cv_folds,
    feature_columns,
    feature_subsets,
    held_out_squared_errors,
    lag_scale,
)


def _ar1_windows(phi: float, n: int, seq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of a standardised AR(1) return (feature 0) and pure noise (feature 1), and the
    next return."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n + seq + 1)
    for t in range(1, len(r)):
        r[t] = phi * r[t - 1] + rng.standard_normal()
    noise = rng.standard_normal(len(r))
    body = np.stack([r, noise], axis=1)
    X = np.lib.stride_tricks.sliding_window_view(body, (seq, 2))[:, 0][:n]
    y = r[seq : seq + n]
    return X.astype(np.float32), y


def test_held_out_errors_equal_scikit_learn_ridge_for_every_alpha() -> None:
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((300, 8)), rng.standard_normal(300) + 0.3
    train, held = np.arange(0, 200), np.arange(230, 300)
    alphas = (1e-3, 0.1, 10.0)
    every = np.ones(X.shape[1], dtype=bool)
    got = held_out_squared_errors(
        FoldMoments.of(X, y, train, held), every, np.ones(X.shape[1]), alphas
    )
    for value, alpha in zip(got, alphas, strict=True):
        model = Ridge(alpha=alpha * len(train)).fit(X[train], y[train])
        assert value == pytest.approx(np.sum((model.predict(X[held]) - y[held]) ** 2), rel=1e-9)


def test_cv_folds_are_contiguous_cover_every_sample_once_and_purge_the_neighbours() -> None:
    splits = cv_folds(100, 5, purge=7)
    held = np.concatenate([h for _, h in splits])
    assert np.array_equal(held, np.arange(100))
    for train, h in splits:
        assert np.all(np.diff(h) == 1)
        distance = np.min(np.abs(train[:, None] - h[None, :]))
        assert distance > 7


def test_lag_scale_is_one_for_the_newest_bar_and_shrinks_with_age() -> None:
    scale = lag_scale(4, 2, 1.0).reshape(4, 2)  # window oldest-first
    assert np.allclose(scale[:, 0], [1 / 4, 1 / 3, 1 / 2, 1.0])
    assert np.allclose(scale[:, 0], scale[:, 1])
    assert np.all(lag_scale(4, 2, 0.0) == 1.0)


def test_ridge_finds_the_newest_lag_and_exports_exactly_what_it_predicts() -> None:
    seq = 12
    X, y = _ar1_windows(0.3, 3000, seq, seed=3)
    family = RidgeFamily()
    fitted = family.fit(X, y, X[:5], y[:5], seed=0, epochs=1)

    coef = fitted.coefficients().reshape(seq, 2)
    assert np.argmax(np.abs(coef[:, 0])) == seq - 1  # the newest bar's return
    assert 0.2 < coef[-1, 0] < 0.4
    assert fitted.decay in (0.0, 1.0, 2.0) and fitted.alpha in family.alphas
    assert fitted.features is not None
    label = _label(fitted.features, 2, fitted.decay, fitted.alpha)
    assert min(fitted.scores.values()) == fitted.scores[label]
    assert np.abs(coef[:, 1]).max() < 0.25 * coef[-1, 0]  # the noise feature: next to nothing
    if fitted.features == (0,):
        assert np.all(coef[:, 1] == 0.0)  # left out: exact zeros
    session = ort.InferenceSession(family.to_onnx(fitted, seq, 2))
    onnx_out = session.run(None, {session.get_inputs()[0].name: X[:200]})[0].ravel()
    assert np.allclose(onnx_out, family.predict(fitted, X[:200]), rtol=1e-5, atol=1e-6)
    assert family.selection(fitted)["lag_decay"] == fitted.decay
    assert family.selection(fitted)["features"] == list(fitted.features)


def test_a_left_out_feature_gets_exact_zero_coefficients() -> None:
    seq = 6
    X, y = _ar1_windows(0.3, 2000, seq, seed=8)
    family = RidgeFamily(feature_sets=[(0,)])
    fitted = family.fit(X, y, X[:5], y[:5], seed=0, epochs=1)
    coef = fitted.coefficients().reshape(seq, 2)
    assert np.all(coef[:, 1] == 0.0) and coef[-1, 0] > 0.2
    session = ort.InferenceSession(family.to_onnx(fitted, seq, 2))
    onnx_out = session.run(None, {session.get_inputs()[0].name: X[:100]})[0].ravel()
    assert np.allclose(onnx_out, family.predict(fitted, X[:100]), rtol=1e-5, atol=1e-6)


def test_feature_subsets_are_all_then_each_alone() -> None:
    assert feature_subsets(3) == [(0, 1, 2), (0,), (1,), (2,)]
    assert feature_subsets(1) == [(0,)]
    assert feature_columns(2, 3, (1,)).tolist() == [False, True, False] * 2


def test_on_pure_noise_ridge_shrinks_every_coefficient_toward_zero() -> None:
    X, _ = _ar1_windows(0.0, 3000, 12, seed=4)
    y = np.random.default_rng(5).standard_normal(3000)
    fitted = RidgeFamily().fit(X, y, X[:5], y[:5], seed=0, epochs=1)
    ols = Ridge(alpha=1e-9).fit(X.reshape(3000, -1), y)
    assert np.abs(fitted.coefficients()).sum() < 0.5 * np.abs(ols.coef_).sum()


def test_winsorised_targets_keep_a_few_wild_bars_from_setting_the_coefficients() -> None:
    seq = 6
    X, y = _ar1_windows(0.2, 3000, seq, seed=11)
    wild = y.copy()
    wild[[100, 900, 1700, 2500]] = [400.0, -350.0, 500.0, -450.0]  # four bars, 100s of SDs
    clipped = RidgeFamily().fit(X, wild, X[:5], wild[:5], seed=0, epochs=1)
    raw = RidgeFamily(target_clip=None).fit(X, wild, X[:5], wild[:5], seed=0, epochs=1)
    clean = RidgeFamily(target_clip=None).fit(X, y, X[:5], y[:5], seed=0, epochs=1)

    lag1 = {
        k: f.coefficients().reshape(seq, 2)[-1, 0]
        for k, f in {"clipped": clipped, "raw": raw, "clean": clean}.items()
    }
    assert abs(lag1["clipped"] - lag1["clean"]) < 0.03
    assert abs(lag1["raw"] - lag1["clean"]) > 3 * abs(lag1["clipped"] - lag1["clean"])
    low, high = clipped.target_bounds
    assert low < np.median(y) < high and high - low < 10  # about +/- 3 SDs of a unit series
    assert clipped.targets_clipped >= 4 and raw.target_bounds is None
    record = RidgeFamily().selection(clipped)["target_clip"]
    assert record["clipped"] == clipped.targets_clipped and record["robust_sd"] == TARGET_CLIP


def test_heavy_tailed_noise_is_estimated_better_with_winsorised_targets() -> None:
    """Student-t (2.5 degrees of freedom) innovations, 12 seeds: the lag-1 coefficient's mean
    absolute error is smaller with the clip than without."""
    seq, phi, errors = 4, 0.1, {True: [], False: []}
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        r = np.zeros(3000 + seq + 1)
        for t in range(1, len(r)):
            r[t] = phi * r[t - 1] + rng.standard_t(2.5)
        X = np.lib.stride_tricks.sliding_window_view(r, seq)[:3000, :, None].astype(np.float32)
        y = r[seq : seq + 3000]
        for clip in (True, False):
            family = RidgeFamily(target_clip=TARGET_CLIP if clip else None, feature_sets=[(0,)])
            fitted = family.fit(X, y, X[:5], y[:5], seed=0, epochs=1)
            errors[clip].append(abs(fitted.coefficients()[-1] - phi))
    assert np.mean(errors[True]) < np.mean(errors[False])


def test_a_constant_target_is_not_clipped() -> None:
    X, _ = _ar1_windows(0.0, 400, 4, seed=2)
    fitted = RidgeFamily().fit(X, np.full(400, 0.5), X[:5], np.full(5, 0.5), seed=0, epochs=1)
    assert fitted.targets_clipped == 0 and np.allclose(fitted.model.intercept_, 0.5)
