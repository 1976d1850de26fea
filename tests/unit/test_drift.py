"""Drift guard data side: quantile edges, PSI, rolling batch == streaming, reference JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from atb_strategies.bundle.format import FeatureSchema
from atb_strategies.bundle.jsonio import dumps_strict
from atb_strategies.bundle.loader import load_bundle_spec
from atb_strategies.exceptions import BundleError, CandleDataError, FeatureSchemaError
from atb_strategies.features.drift import (
    DEFAULT_WINDOW,
    METADATA_KEY,
    PREDICTION,
    PSI_DRIFT,
    PSI_WARN,
    DriftReference,
    bin_fractions,
    drift_reference,
    fit_reference,
    psi,
    reference_edges,
)
from atb_strategies.features.pipeline import FeaturePipeline
from atb_strategies.features.psi import DriftMonitor, rolling_psi
from tests.conftest import RICH_FEATURES, BundleFactory, synthetic_candles

NAMES = ["normal", "rounded", "constant", "three_values", "skewed"]


def _mixed(n: int, seed: int) -> np.ndarray:
    """Columns with ties, a constant, a discrete feature, NaN runs and isolated inf values."""
    rng = np.random.default_rng(seed)
    m = np.column_stack(
        [
            rng.standard_normal(n),
            np.round(rng.standard_normal(n)),
            np.zeros(n),
            rng.integers(0, 3, n).astype(np.float64),
            rng.lognormal(0.0, 1.0, n),
        ]
    )
    m[rng.random(n) < 0.003, 0] = np.nan
    m[200:230, 4] = np.nan
    m[rng.random(n) < 0.002, 3] = np.inf
    m[n - 100 : n - 88, 2] = 1.0  # the constant leaves its training value for 12 bars
    return m


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    rng = np.random.default_rng(0)
    train = _mixed(4000, seed=1)
    train[:, 2] = 0.0
    return fit_reference(train, NAMES, predictions=rng.normal(0.0, 0.01, 3000))


# ---------------------------------------------------------------- edges


def test_reference_edges_with_continuous_sample_gives_deciles_of_equal_mass() -> None:
    x = np.random.default_rng(2).standard_normal(10_000)
    edges = reference_edges(x)
    assert len(edges) == 9 and (np.diff(edges) > 0).all()
    assert set(np.round(bin_fractions(x, edges), 3)) == {0.1}


def test_reference_edges_with_ties_gives_fewer_bins_none_empty() -> None:
    x = np.array([0.0] * 45 + [1.0] * 10 + [2.0] * 45)
    edges = reference_edges(x)
    np.testing.assert_array_equal(edges, [0.0, 1.0])
    np.testing.assert_allclose(bin_fractions(x, edges), [0.45, 0.10, 0.45])
    # the top quantile is the maximum: the cut moves down so the last bin is not empty
    y = np.array([0.0] * 5 + [1.0] * 95)
    np.testing.assert_array_equal(reference_edges(y), [0.0])
    np.testing.assert_allclose(bin_fractions(y, reference_edges(y)), [0.05, 0.95])


def test_reference_edges_with_constant_sample_isolates_the_constant() -> None:
    edges = reference_edges(np.full(50, 3.5))
    assert edges[1] == 3.5 and edges[0] == np.nextafter(3.5, -np.inf)
    np.testing.assert_array_equal(bin_fractions([3.4, 3.5, 3.5, 3.6], edges), [0.25, 0.5, 0.25])


def test_reference_edges_ignores_nonfinite_values_and_refuses_none() -> None:
    x = np.array([np.nan, np.inf, 1.0, 2.0, 3.0, -np.inf])
    np.testing.assert_array_equal(reference_edges(x, bins=3), reference_edges([1.0, 2.0, 3.0], 3))
    with pytest.raises(ValueError, match="at least one finite value"):
        reference_edges(np.array([np.nan, np.inf]))
    with pytest.raises(ValueError, match="'bins' parameter"):
        reference_edges(np.arange(10.0), bins=1)


# ---------------------------------------------------------------- psi


def test_psi_with_identical_histograms_is_zero() -> None:
    e = np.full(10, 0.1)
    assert psi(e, e) == 0.0
    assert PSI_WARN < PSI_DRIFT


def test_psi_with_known_histograms_matches_formula_and_eps_floor() -> None:
    e = np.array([0.5, 0.5])
    a = np.array([0.8, 0.2])
    expected = 0.3 * math.log(0.8 / 0.5) + (-0.3) * math.log(0.2 / 0.5)
    assert psi(e, a) == pytest.approx(expected, rel=1e-12)
    # an empty bin counts as eps, not 0
    assert psi(e, [1.0, 0.0]) == pytest.approx(
        0.5 * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5), rel=1e-12
    )
    with pytest.raises(ValueError, match="same length"):
        psi(e, [1.0])


def test_psi_with_same_distribution_is_small_and_shifted_normal_exceeds_drift() -> None:
    rng = np.random.default_rng(4)
    edges = reference_edges(rng.standard_normal(20_000))
    e = bin_fractions(rng.standard_normal(20_000), edges)
    same = bin_fractions(rng.standard_normal(5_000), edges)
    shifted = bin_fractions(rng.normal(0.75, 1.0, 5_000), edges)
    assert psi(e, same) < 0.01
    assert psi(e, shifted) > PSI_DRIFT


def test_noise_floor_of_undrifted_168_bar_windows_stays_below_drift_threshold() -> None:
    """The module docstring's measurement, smaller: median ~0.053, 99th percentile ~0.14."""
    rng = np.random.default_rng(5)
    ref = fit_reference(rng.standard_normal((10_000, 1)), ["x"])
    values = rolling_psi(rng.standard_normal((20_000, 1)), ref, ["x"], DEFAULT_WINDOW)[:, 0]
    values = values[~np.isnan(values)]
    assert 0.04 < np.median(values) < 0.07
    assert np.quantile(values, 0.99) < PSI_DRIFT


# ---------------------------------------------------------------- rolling and streaming


def test_rolling_psi_at_each_bar_equals_psi_of_trailing_window(reference: DriftReference) -> None:
    m = _mixed(400, seed=6)
    out = rolling_psi(m, reference, NAMES, window=50)
    assert out.shape == m.shape
    assert np.isnan(out[:49]).all()
    for t in (49, 120, 260, 399):
        for j, name in enumerate(NAMES):
            window = m[t - 49 : t + 1, j]
            if np.isnan(window).any():
                assert np.isnan(out[t, j])
                continue
            edges, expected = reference.bins_of(name)
            actual = np.bincount(np.searchsorted(edges, window), minlength=len(expected)) / 50
            assert out[t, j] == pytest.approx(psi(expected, actual), rel=1e-12, abs=1e-15)


def test_rolling_psi_with_nan_blanks_only_that_column_for_window_bars(
    reference: DriftReference,
) -> None:
    m = _mixed(600, seed=7)
    m[:, 0] = np.random.default_rng(8).standard_normal(600)
    m[300, 0] = np.nan
    m[:, 4] = 1.0
    out = rolling_psi(m, reference, NAMES, window=20)
    nan_bars = np.flatnonzero(np.isnan(out[:, 0]))
    np.testing.assert_array_equal(nan_bars, np.r_[0:19, 300:320])
    assert not np.isnan(out[19:, 4]).any()


def test_drift_monitor_equals_rolling_psi_exactly_bar_by_bar(reference: DriftReference) -> None:
    m = _mixed(3000, seed=9)
    preds = np.random.default_rng(10).normal(0.002, 0.012, (3000, 1))
    names = [*NAMES, PREDICTION]
    matrix = np.hstack([m, preds])
    for window in (1, 7, DEFAULT_WINDOW):
        batch = rolling_psi(matrix, reference, names, window)
        monitor = DriftMonitor(reference, names, window)
        streamed = np.array([monitor.update(row) for row in matrix])
        assert monitor.ready and monitor.bars_seen == 3000
        # same floats, NaN where NaN: not approximately, exactly
        np.testing.assert_array_equal(streamed, batch)
        assert np.isfinite(batch[window - 1 :]).any(axis=0).all()
    # the constant that moved off its training value shows up as drift
    assert np.nanmax(batch[:, 2]) > PSI_DRIFT


def test_rolling_psi_with_100k_bars_by_30_features_is_finite_after_each_window() -> None:
    # Its speed is measured in benchmarks/bench_live_ops.py, not asserted here: a wall-clock
    # bound fails on a busy machine.
    rng = np.random.default_rng(11)
    m = rng.standard_normal((100_000, 30))
    names = [f"f{j}" for j in range(30)]
    ref = fit_reference(m[:20_000], names)
    out = rolling_psi(m, ref, names)
    assert out.shape == (100_000, 30)
    assert np.isfinite(out[200:]).all()


def test_drift_monitor_with_unknown_name_raises_feature_schema_error(
    reference: DriftReference,
) -> None:
    with pytest.raises(FeatureSchemaError, match="- rsi"):
        DriftMonitor(reference, ["normal", "rsi"])
    no_prediction = fit_reference(_mixed(300, seed=1)[:, :1], ["normal"])
    with pytest.raises(FeatureSchemaError, match=PREDICTION):
        rolling_psi(np.zeros((5, 1)), no_prediction, [PREDICTION], window=2)
    with pytest.raises(ValueError, match="'window' parameter"):
        DriftMonitor(reference, ["normal"], window=0)
    with pytest.raises(ValueError, match="must hold 2 values"):
        DriftMonitor(reference, ["normal", "skewed"]).update([1.0])


# ---------------------------------------------------------------- the reference as JSON


def test_drift_reference_round_trips_through_strict_json(reference: DriftReference) -> None:
    data = json.loads(dumps_strict({METADATA_KEY: reference.to_dict()}))
    again = drift_reference(data)
    assert again == reference
    assert again is not None and again.names == NAMES and again.rows == reference.rows
    for name in [*NAMES, PREDICTION]:
        for a, b in zip(again.bins_of(name), reference.bins_of(name), strict=True):
            np.testing.assert_array_equal(a, b)
    m = _mixed(500, seed=12)
    np.testing.assert_array_equal(
        rolling_psi(m, again, NAMES, 30), rolling_psi(m, reference, NAMES, 30)
    )


def test_drift_reference_without_key_is_none() -> None:
    assert drift_reference({"format_version": 1, "training": {}}) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("bins"), "drift_reference.bins"),
        (lambda d: d.update(features=[]), "drift_reference.features"),
        (lambda d: d["features"]["normal"].pop("edges"), "drift_reference.features.normal.edges"),
        (
            lambda d: d["features"]["normal"]["edges"].reverse(),
            "drift_reference.features.normal.edges",
        ),
        (
            lambda d: d["features"]["normal"]["expected"].append(0.0),
            "drift_reference.features.normal.expected",
        ),
        (
            lambda d: d["features"]["rounded"]["expected"].__setitem__(0, 0.9),
            "drift_reference.features.rounded.expected",
        ),
        (
            lambda d: d["features"]["skewed"]["edges"].__setitem__(0, "x"),
            "drift_reference.features.skewed.edges",
        ),
        (lambda d: d["prediction"].pop("expected"), "drift_reference.prediction.expected"),
        (lambda d: d.update(rows=-1), "drift_reference.rows"),
    ],
)
def test_drift_reference_with_malformed_dict_raises_bundle_error_naming_field(
    reference: DriftReference, change, field: str
) -> None:
    data = reference.to_dict()
    change(data)
    path = Path("models/BTCUSDT/basic/v/metadata.json")
    with pytest.raises(BundleError) as info:
        drift_reference({METADATA_KEY: data}, path)
    assert info.value.field == field
    assert info.value.path == path
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: field {field!r}")


def test_load_bundle_spec_with_malformed_drift_reference_fails_at_selection(
    make_bundle: BundleFactory,
) -> None:
    directory = make_bundle()
    meta_path = directory / "metadata.json"
    meta = json.loads(meta_path.read_text())
    spec = load_bundle_spec(directory)
    pipe = FeaturePipeline(spec.schema)
    frame = synthetic_candles(300, seed=14)
    series = pipe.series({c: frame[c].to_numpy(np.float64) for c in pipe.columns})
    reference = fit_reference(series, spec.schema.feature_names)
    meta[METADATA_KEY] = reference.to_dict()
    meta_path.write_text(dumps_strict(meta))
    spec = load_bundle_spec(directory)
    assert drift_reference(spec.metadata.raw, meta_path) == reference

    first = spec.schema.feature_names[0]
    meta[METADATA_KEY]["features"][first]["expected"] = [1.0]
    meta_path.write_text(dumps_strict(meta))
    with pytest.raises(BundleError, match=rf"'drift_reference\.features\.{first}\.expected'"):
        load_bundle_spec(directory)

    other = fit_reference(series[:, ::-1], spec.schema.feature_names[::-1])
    meta[METADATA_KEY] = other.to_dict()
    meta_path.write_text(dumps_strict(meta))
    with pytest.raises(BundleError, match="in this order") as info:
        load_bundle_spec(directory)
    assert info.value.field == "drift_reference.features"


def test_drift_reference_with_non_object_raises_bundle_error() -> None:
    with pytest.raises(BundleError, match="must be an object"):
        drift_reference({METADATA_KEY: [1, 2]})


# ---------------------------------------------------------------- live per-bar series


def test_feature_stream_last_series_row_equals_batch_series_at_each_bar() -> None:
    frame = synthetic_candles(400, seed=13)
    pipe = FeaturePipeline(FeatureSchema(16, RICH_FEATURES))
    series = pipe.series({c: frame[c].to_numpy(np.float64) for c in pipe.columns})
    recursive = [j for j, f in enumerate(pipe._features) if any(s.recursive for s in f.series)]
    exact = [j for j in range(pipe.n_features) if j not in recursive]
    stream = pipe.stream()
    with pytest.raises(CandleDataError, match="No bar seen"):
        stream.last_series_row()
    for t, row in enumerate(frame[pipe.columns].to_numpy()):
        stream.update(row)
        got = stream.last_series_row()
        np.testing.assert_array_equal(got[exact], series[t, exact])
        np.testing.assert_allclose(got[recursive], series[t, recursive], rtol=0, atol=1e-9)
        assert np.array_equal(np.isnan(got), np.isnan(series[t]))
