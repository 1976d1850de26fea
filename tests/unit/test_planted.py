"""The planted-signal market: consistent candles, the planted rule, its true conditional mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from atb_strategies.data.planted import generate_planted_ohlcv
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.stats import direction_accuracy, out_of_sample_block


def _next_return(candles: pd.DataFrame) -> np.ndarray:
    """log(close[t+1] / close[t]) per bar t (the last bar has none)."""
    return np.log(candles["close"].shift(-1) / candles["close"]).to_numpy()[:-1]


def _autocorr(x: np.ndarray, lag: int = 1) -> float:
    return float(np.corrcoef(x[lag:], x[:-lag])[0, 1])


@pytest.mark.parametrize("rule", ["ar1", "sign", "regime"])
@pytest.mark.parametrize("noise", ["gaussian", "garch_t"])
def test_planted_candles_are_ohlcv_consistent_and_seeded(rule, noise):
    candles, true_mean = generate_planted_ohlcv(3000, phi=0.2, rule=rule, noise=noise, seed=4)
    assert list(candles.columns) == ["open", "high", "low", "close", "volume"]
    assert (candles["high"] >= candles[["open", "close"]].max(axis=1)).all()
    assert (candles["low"] <= candles[["open", "close"]].min(axis=1)).all()
    assert (candles["low"] > 0).all() and (candles["volume"] > 0).all()
    np.testing.assert_array_equal(candles["open"].to_numpy()[1:], candles["close"].to_numpy()[:-1])
    assert candles.index.is_monotonic_increasing and candles.index.freq == "h"
    assert true_mean.index.equals(candles.index) and np.isfinite(true_mean).all()
    again, again_mean = generate_planted_ohlcv(3000, phi=0.2, rule=rule, noise=noise, seed=4)
    pd.testing.assert_frame_equal(candles, again)
    pd.testing.assert_series_equal(true_mean, again_mean)
    other, _ = generate_planted_ohlcv(3000, phi=0.2, rule=rule, noise=noise, seed=5)
    assert not np.allclose(other["close"], candles["close"])


@pytest.mark.parametrize("noise", ["gaussian", "garch_t"])
def test_ar1_returns_have_the_planted_autocorrelation_and_the_true_mean_is_unbiased(noise):
    candles, true_mean = generate_planted_ohlcv(40_000, phi=0.3, noise=noise, seed=1)
    r = np.log(candles["close"]).diff().to_numpy()[1:]
    assert _autocorr(r) == pytest.approx(0.3, abs=0.03)
    nxt, mean = _next_return(candles), true_mean.to_numpy()[:-1]
    np.testing.assert_allclose(mean[1:], 0.3 * r[:-1], rtol=1e-9, atol=1e-15)
    # the surprise next - mean has mean 0 and is unpredictable from the mean itself
    slope = scipy_stats.linregress(mean, nxt)
    assert slope.slope == pytest.approx(1.0, abs=0.1)
    assert abs(np.mean(nxt - mean)) < 3 * np.std(nxt) / np.sqrt(len(nxt))


def test_garch_t_noise_has_fat_tails_and_volatility_clusters_and_gaussian_does_not():
    garch, _ = generate_planted_ohlcv(20_000, phi=0.0, noise="garch_t", seed=2)
    gauss, _ = generate_planted_ohlcv(20_000, phi=0.0, noise="gaussian", seed=2)
    rg = np.log(garch["close"]).diff().to_numpy()[1:]
    rn = np.log(gauss["close"]).diff().to_numpy()[1:]
    assert scipy_stats.kurtosis(rg) > 2 and abs(scipy_stats.kurtosis(rn)) < 0.2
    assert _autocorr(rg**2) > 0.1 and abs(_autocorr(rn**2)) < 0.05
    # same long-run volatility (0.6 a year)
    assert np.std(rg) == pytest.approx(np.std(rn), rel=0.15)


@pytest.mark.parametrize("noise", ["gaussian", "garch_t"])
def test_phi_zero_is_the_null_a_walk_with_nothing_to_predict(noise):
    candles, true_mean = generate_planted_ohlcv(20_000, phi=0.0, noise=noise, seed=3)
    assert (true_mean == 0).all()
    r = np.log(candles["close"]).diff().to_numpy()[1:]
    assert abs(_autocorr(r)) < 3 / np.sqrt(len(r))


def test_sign_rule_continues_the_last_bars_direction_by_phi_sigma():
    candles, true_mean = generate_planted_ohlcv(30_000, phi=0.3, rule="sign", seed=6)
    r = np.log(candles["close"]).diff().to_numpy()[1:]
    sd = 0.6 / np.sqrt(365 * 24)
    nxt = r[1:]
    after_up, after_down = nxt[r[:-1] > 0], nxt[r[:-1] < 0]
    assert np.mean(after_up) == pytest.approx(0.3 * sd, abs=0.15 * sd)
    assert np.mean(after_down) == pytest.approx(-0.3 * sd, abs=0.15 * sd)
    assert set(np.round(true_mean.to_numpy()[1:] / (0.3 * sd), 9)) <= {-1.0, 1.0}


def test_regime_rule_switches_between_momentum_and_reversal():
    candles, true_mean = generate_planted_ohlcv(40_000, phi=0.4, rule="regime", seed=7)
    r = np.log(candles["close"]).diff().to_numpy()
    ratio = true_mean.to_numpy()[1:-1] / r[1:-1]  # phi * regime where r != 0
    regime = np.sign(ratio)
    np.testing.assert_allclose(np.abs(ratio), 0.4, rtol=1e-6)  # prices round r
    assert 0.3 < np.mean(regime > 0) < 0.7  # both regimes, about half the time each
    switches = np.count_nonzero(np.diff(regime))
    assert 40 < switches < 160  # mean duration 500 bars over 40,000
    nxt = r[2:]
    for sign in (1, -1):
        part = regime == sign
        assert _autocorr_pairs(r[1:-1][part], nxt[part]) == pytest.approx(0.4 * sign, abs=0.05)


def _autocorr_pairs(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def test_the_oracle_scored_by_the_statistics_finds_a_planted_signal_and_not_the_null():
    candles, true_mean = generate_planted_ohlcv(6000, phi=0.2, seed=8)
    nxt, mean = _next_return(candles), true_mean.to_numpy()[:-1]
    # sign accuracy of the AR(1) oracle: about 0.5 + arcsin(phi) / pi
    assert direction_accuracy(mean, nxt) == pytest.approx(0.5 + np.arcsin(0.2) / np.pi, abs=0.02)
    oos = out_of_sample_block(mean, nxt, float(np.mean(nxt[:1000])), reps=300)
    assert oos["beats_baselines"] is True
    null, null_mean = generate_planted_ohlcv(6000, phi=0.0, seed=8)
    nothing = out_of_sample_block(
        null_mean.to_numpy()[:-1] + 1e-9, _next_return(null), 0.0, reps=300
    )
    assert nothing["beats_baselines"] is False


@pytest.mark.parametrize(
    ("changes", "word"),
    [
        ({"phi": 1.0}, "'phi'"),
        ({"phi": float("nan")}, "'phi'"),
        ({"rule": "trend"}, "'rule'"),
        ({"noise": "cauchy"}, "'noise'"),
        ({"bars": 1}, "'bars'"),
    ],
)
def test_bad_parameters_raise_one_clear_configuration_error(changes, word):
    settings = {"bars": 100, "phi": 0.1, **changes}
    with pytest.raises(ConfigurationError, match=word):
        generate_planted_ohlcv(settings.pop("bars"), **settings)
